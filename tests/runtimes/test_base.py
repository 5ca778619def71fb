"""load_release: artifact verification before any load, dispatch, error translation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from backout.errors import ArtifactCorrupt, RuntimeLoadError
from backout.registry.artifacts import LocalBlobStore, MemoryBlobStore
from backout.registry.manifest import Artifact, ReleaseManifest, Runtime, RuntimeKind
from backout.runtimes import LOADERS, LoadContext, Predictor, load_release
from backout.runtimes.base import deep_sizeof
from tests.runtimes.conftest import MakeRelease, run

PYTHON_MODEL = b"def predict(inputs):\n    return {'prediction': inputs['input'].sum(axis=1)}\n"


def _flip_first_byte(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_byte_in_stored_blob_refuses_load(
    make_release: MakeRelease, blobs: LocalBlobStore, iris_joblib: bytes
) -> None:
    manifest = make_release(RuntimeKind.SKLEARN, {"model.joblib": iris_joblib})
    _flip_first_byte(blobs.blob_path(manifest.artifacts[0].sha256))
    with pytest.raises(ArtifactCorrupt, match=r"iris@1\.0\.0.*'model\.joblib'"):
        load_release(manifest, blobs)


def test_flipped_byte_is_caught_even_when_the_store_does_not_verify(
    iris_joblib: bytes,
) -> None:
    """MemoryBlobStore spills once and never re-checks the spilled file: the re-hash must."""
    blobs = MemoryBlobStore()
    digest, size = blobs.put_bytes(iris_joblib)
    manifest = ReleaseManifest(
        model="iris",
        version="1.0.0",
        artifacts=(Artifact(path="model.joblib", sha256=digest, size=size),),
        runtime=Runtime(kind=RuntimeKind.SKLEARN),
    )
    _flip_first_byte(blobs.local_path(digest))
    with pytest.raises(ArtifactCorrupt, match=r"iris@1\.0\.0.*'model\.joblib'.*hashes to"):
        load_release(manifest, blobs)


def test_corrupt_artifact_is_never_handed_to_the_loader(
    make_release: MakeRelease, blobs: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = make_release(RuntimeKind.PYTHON, {"m.py": PYTHON_MODEL})
    called: list[LoadContext] = []

    def spy(ctx: LoadContext) -> Predictor:
        called.append(ctx)
        raise AssertionError("loader must not run")

    monkeypatch.setitem(LOADERS, RuntimeKind.PYTHON, spy)
    _flip_first_byte(blobs.blob_path(manifest.artifacts[0].sha256))
    with pytest.raises(ArtifactCorrupt):
        load_release(manifest, blobs)
    assert called == []


def test_size_mismatch_refuses_load(make_release: MakeRelease, blobs: LocalBlobStore) -> None:
    good = make_release(RuntimeKind.PYTHON, {"m.py": PYTHON_MODEL})
    art = good.artifacts[0]
    manifest = good.model_copy(
        update={"artifacts": (Artifact(path=art.path, sha256=art.sha256, size=art.size + 1),)}
    )
    with pytest.raises(ArtifactCorrupt, match=r"'m\.py'.*bytes where the release says"):
        load_release(manifest, blobs)


def test_missing_blob_refuses_load_naming_release_and_file(blobs: LocalBlobStore) -> None:
    manifest = ReleaseManifest(
        model="iris",
        version="2.0.0",
        artifacts=(Artifact(path="model.joblib", sha256="a" * 64, size=10),),
        runtime=Runtime(kind=RuntimeKind.SKLEARN),
    )
    with pytest.raises(RuntimeLoadError, match=r"iris@2\.0\.0.*'model\.joblib'.*not in the"):
        load_release(manifest, blobs)


def test_third_party_exception_is_translated_with_cause(
    make_release: MakeRelease, blobs: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = make_release(RuntimeKind.PYTHON, {"m.py": PYTHON_MODEL})

    def broken(ctx: LoadContext) -> Predictor:
        raise OSError("disk on fire")

    monkeypatch.setitem(LOADERS, RuntimeKind.PYTHON, broken)
    with pytest.raises(RuntimeLoadError, match=r"iris@1\.0\.0.*python runtime.*disk on fire") as e:
        load_release(manifest, blobs)
    assert isinstance(e.value.__cause__, OSError)


def test_loaded_predictor_satisfies_protocol(
    make_release: MakeRelease, blobs: LocalBlobStore
) -> None:
    manifest = make_release(RuntimeKind.PYTHON, {"m.py": PYTHON_MODEL}, {"entrypoint": "m:predict"})
    predictor = load_release(manifest, blobs)
    assert isinstance(predictor, Predictor)
    run(predictor.aclose())


@pytest.mark.parametrize("kind", [RuntimeKind.SKLEARN, RuntimeKind.ONNX, RuntimeKind.PYTHON])
def test_memory_bytes_is_positive_for_in_process_runtimes(
    kind: RuntimeKind,
    make_release: MakeRelease,
    blobs: LocalBlobStore,
    iris_joblib: bytes,
    iris_onnx: bytes,
) -> None:
    files = {
        RuntimeKind.SKLEARN: {"model.joblib": iris_joblib},
        RuntimeKind.ONNX: {"model.onnx": iris_onnx},
        RuntimeKind.PYTHON: {"m.py": PYTHON_MODEL},
    }[kind]
    options = {"entrypoint": "m:predict"} if kind is RuntimeKind.PYTHON else {}
    predictor = load_release(make_release(kind, files, options), blobs)
    assert predictor.memory_bytes() > 0
    run(predictor.aclose())


def test_deep_sizeof_counts_array_buffers_once() -> None:
    big = np.zeros(100_000)
    view = big[:10]
    assert big.nbytes <= deep_sizeof({"a": big, "b": view}) < 2 * big.nbytes


def test_public_names_of_runtimes_exist() -> None:
    import backout.runtimes as runtimes

    assert all(hasattr(runtimes, name) for name in runtimes.__all__)
    assert sorted(runtimes.__all__) == runtimes.__all__
