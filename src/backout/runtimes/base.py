"""The one interface every runtime implements, and the verified load that picks a runtime.

For the gateway and the warm pool: :func:`load_release` turns a registered release into a
:class:`Predictor`, after re-verifying every artifact's bytes against the digests the release
was registered with. Each runtime kind lives in its own module and is imported only when a
release of that kind is loaded, so a gateway that serves ONNX never imports MLflow.

Errors (all in :mod:`backout.errors`): ``RuntimeLoadError`` when a release cannot become a
predictor, ``ArtifactCorrupt`` when its bytes no longer match, ``ValidationError`` for inputs
that do not fit the model (422), ``ModelError`` / ``UpstreamError`` / ``UpstreamTimeout`` when
a loaded release fails while predicting (500 / 502 / 504).
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from backout.errors import (
    ArtifactCorrupt,
    BackoutError,
    NotFound,
    RuntimeLoadError,
    ValidationError,
)
from backout.registry.artifacts import BlobStore, hash_file
from backout.registry.manifest import Artifact, ReleaseManifest, RuntimeKind

DEFAULT_LOAD_TIMEOUT_S = 30.0


@runtime_checkable
class Predictor(Protocol):
    """A loaded release: named tensors in, named tensors out, first dimension the batch."""

    input_names: list[str]
    """Names of the tensors :meth:`infer` takes."""
    feature_names: list[str] | None
    """Column order for row-of-fields requests (e.g. scikit-learn's ``feature_names_in_``)."""
    output_names: list[str]
    """Names of the tensors :meth:`infer` returns."""
    classes: list[str] | None
    """Class labels of a classifier, as strings, in the order of its probability columns."""

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Predict one batch."""
        ...

    def memory_bytes(self) -> int:
        """Approximately how much memory this loaded release holds."""
        ...

    async def aclose(self) -> None:
        """Release the model's resources (connections, modules)."""
        ...


@dataclass(frozen=True)
class LoadContext:
    """What a runtime's loader gets: the release and its verified local files."""

    manifest: ReleaseManifest
    files: Mapping[str, Path]
    """Artifact path inside the release → a local file whose bytes were just verified."""
    artifacts: Mapping[str, Artifact]
    """Artifact path inside the release → its manifest entry (digest and size)."""
    timeout_s: float = DEFAULT_LOAD_TIMEOUT_S
    """Bound on network calls made while loading (HTTP metadata, MLflow registry)."""
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return self.manifest.ref

    def fail(self, what: str, fix: str) -> RuntimeLoadError:
        """A :class:`RuntimeLoadError` that names the release, what went wrong and the fix."""
        return RuntimeLoadError(f"release {self.ref} cannot be loaded: {what}; {fix}")

    def option_str(self, key: str, default: str | None = None) -> str:
        """A string option of ``runtime.options``; a clear error when missing or mistyped."""
        value = self.options.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(
                f"runtime option {key!r} is {value!r}",
                f"set runtime.options.{key} to a non-empty string",
            )
        return value

    def option_float(self, key: str, default: float) -> float:
        """A positive number option of ``runtime.options``."""
        value = self.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(
                f"runtime option {key!r} is {value!r}",
                f"set runtime.options.{key} to a positive number of seconds",
            )
        return float(value)

    def single_file(self, option: str = "file") -> tuple[str, Path]:
        """The artifact named by ``runtime.options[option]``, or the release's only artifact."""
        name = self.options.get(option)
        if name is None:
            if len(self.files) != 1:
                raise self.fail(
                    f"it has {len(self.files)} artifacts and runtime.options.{option} is not set",
                    f"set runtime.options.{option} to one of {sorted(self.files)}",
                )
            name = next(iter(self.files))
        if name not in self.files:
            raise self.fail(
                f"runtime.options.{option} names {name!r}, which is not one of its artifacts",
                f"use one of {sorted(self.files)}",
            )
        return name, self.files[name]

    def read_verified(self, name: str) -> bytes:
        """The bytes of artifact ``name``, hashed again in memory.

        For runtimes whose load runs code (pickle, Python): the bytes that were verified are
        the very bytes that get executed, so no file swap between check and load can slip in.
        """
        data = self.files[name].read_bytes()
        art = self.artifacts[name]
        if hashlib.sha256(data).hexdigest() != art.sha256:
            raise _corrupt(self.manifest, art, "changed after it was verified")
        return data


Loader = Callable[[LoadContext], Predictor]


def _lazy(module: str) -> Loader:
    # Import a runtime's module (and its heavy library) only when a release of that kind is
    # loaded: a gateway serving scikit-learn should not pay for onnxruntime or MLflow.
    def load(ctx: LoadContext) -> Predictor:
        mod = importlib.import_module(module)
        loader: Loader = mod.load
        return loader(ctx)

    load.__qualname__ = load.__name__ = f"load[{module}]"
    return load


LOADERS: dict[RuntimeKind, Loader] = {
    RuntimeKind.SKLEARN: _lazy("backout.runtimes.sklearn"),
    RuntimeKind.ONNX: _lazy("backout.runtimes.onnx"),
    RuntimeKind.PYTHON: _lazy("backout.runtimes.python"),
    RuntimeKind.MLFLOW: _lazy("backout.runtimes.mlflow"),
    RuntimeKind.HTTP: _lazy("backout.runtimes.http"),
}
"""Runtime kind → loader. Plug-ins and tests may add or replace entries."""


def _corrupt(manifest: ReleaseManifest, art: Artifact, how: str) -> ArtifactCorrupt:
    return ArtifactCorrupt(
        f"release {manifest.ref} will not be loaded: its artifact {art.path!r} "
        f"(sha256:{art.sha256[:12]}…) {how}; restore the blob from a backup or register the "
        "release again from the original file"
    )


def verify_artifacts(manifest: ReleaseManifest, blobs: BlobStore) -> dict[str, Path]:
    """Re-hash every artifact of ``manifest``; return artifact path → verified local file.

    Raises :class:`ArtifactCorrupt` when bytes or size differ from the manifest, and
    :class:`RuntimeLoadError` when a blob is missing from the store.
    """
    files: dict[str, Path] = {}
    for art in manifest.artifacts:
        try:
            path = blobs.local_path(art.sha256)
        except NotFound as exc:
            raise RuntimeLoadError(
                f"release {manifest.ref} cannot be loaded: its artifact {art.path!r} "
                f"(sha256:{art.sha256[:12]}…) is not in the artifact store; copy the blob back "
                "or register the release again from the original file"
            ) from exc
        except ArtifactCorrupt as exc:
            raise _corrupt(manifest, art, "does not match its digest in the store") from exc
        digest, size = hash_file(path)
        if size != art.size:
            raise _corrupt(manifest, art, f"is {size} bytes where the release says {art.size}")
        if digest != art.sha256:
            raise _corrupt(manifest, art, f"hashes to sha256:{digest[:12]}…")
        files[art.path] = path
    return files


def load_release(
    manifest: ReleaseManifest,
    blobs: BlobStore,
    *,
    timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
) -> Predictor:
    """Verify every artifact of ``manifest`` and load it into a :class:`Predictor`.

    Blocking (it reads files and may call the network): the gateway calls it off the event
    loop. ``timeout_s`` bounds network calls made while loading. Nothing is deserialized
    before every digest has verified, because pickles and Python artifacts run code.
    """
    kind = manifest.runtime.kind
    loader = LOADERS.get(kind)
    if loader is None:
        raise RuntimeLoadError(
            f"release {manifest.ref} cannot be loaded: no runtime is registered for kind "
            f"{kind!s}; known kinds: {', '.join(sorted(k.value for k in LOADERS))}"
        )
    return load_verified(manifest, verify_artifacts(manifest, blobs), timeout_s=timeout_s)


def load_verified(
    manifest: ReleaseManifest,
    files: Mapping[str, Path],
    *,
    timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
) -> Predictor:
    """Load ``manifest`` from ``files``, whose digests :func:`verify_artifacts` just checked."""
    kind = manifest.runtime.kind
    loader = LOADERS.get(kind)
    if loader is None:
        raise RuntimeLoadError(
            f"release {manifest.ref} cannot be loaded: no runtime is registered for kind "
            f"{kind!s}; known kinds: {', '.join(sorted(k.value for k in LOADERS))}"
        )
    ctx = LoadContext(
        manifest=manifest,
        files=files,
        artifacts={a.path: a for a in manifest.artifacts},
        timeout_s=timeout_s,
        options=manifest.runtime.options,
    )
    try:
        return loader(ctx)
    except BackoutError:
        raise
    except Exception as exc:
        # Whatever a library raised while loading (unpickling errors, a bad ONNX graph, a
        # missing module) becomes one error naming the release; the cause stays chained.
        raise RuntimeLoadError(
            f"release {manifest.ref} cannot be loaded by the {kind!s} runtime: "
            f"{type(exc).__name__}: {exc}; check that the artifact is a valid {kind!s} model "
            "saved with library versions this gateway has"
        ) from exc


def gather_matrix(
    ref: str, inputs: Mapping[str, np.ndarray], input_name: str, feature_names: list[str] | None
) -> np.ndarray:
    """One 2-D batch for a single-input model: the tensor itself, or named columns stacked.

    Accepts ``{input_name: 2-D}``, any single 2-D tensor, or one 1-D (or ``(n, 1)``) column
    per name in ``feature_names``, stacked in that order.
    """
    x = inputs.get(input_name)
    if x is not None:
        return x
    if feature_names and all(f in inputs for f in feature_names):
        return np.column_stack([inputs[f] for f in feature_names])
    if len(inputs) == 1:
        (only,) = inputs.values()
        return only
    if feature_names:
        missing = [f for f in feature_names if f not in inputs]
        raise ValidationError(
            f"{ref} takes one 2-D tensor {input_name!r} or the fields {feature_names}; "
            f"missing fields: {missing}"
        )
    raise ValidationError(f"{ref} takes one 2-D tensor named {input_name!r}; got {sorted(inputs)}")


# Objects every loaded release shares with the whole process: never counted as its memory.
_SHARED = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
)


def pandas_frame() -> Any | None:
    """``pandas.DataFrame`` when pandas is installed, else None.

    pandas is optional (models fitted on DataFrames, MLflow signatures need it). It is
    looked up by name because mypy has no stubs for it in this project's settings.
    """
    try:
        return importlib.import_module("pandas").DataFrame
    except ImportError:
        return None


def deep_sizeof(obj: object, _seen: set[int] | None = None) -> int:
    """Bytes held by ``obj`` and what it references: numpy buffers plus Python objects.

    An estimate for :meth:`Predictor.memory_bytes`. It follows instance dicts, slots and
    containers but not modules, classes or functions, which the process shares anyway.
    """
    seen: set[int] = set() if _seen is None else _seen
    stack: list[object] = [obj]
    total = 0
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, _SHARED):
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            # A view shares its base's buffer: count the buffer once, via the base.
            if isinstance(o.base, np.ndarray):
                stack.append(o.base)
            else:
                # getsizeof counts the buffer only when the array owns it (not np.frombuffer).
                total += sys.getsizeof(o) + (0 if o.flags.owndata else o.nbytes)
            if o.dtype == object:
                stack.extend(o.ravel().tolist())
            continue
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset):
            stack.extend(o)
        else:
            d = getattr(o, "__dict__", None)
            if isinstance(d, dict):
                stack.append(d)
            for slot in getattr(type(o), "__slots__", ()):
                if isinstance(slot, str) and hasattr(o, slot):
                    stack.append(getattr(o, slot))
    return total
