"""The load-and-answer check: a release proves it is a model before it may take traffic.

A registered artifact is only bytes: a 0-byte file, ``/dev/null`` or random bytes register
as a scikit-learn release as easily as a fitted estimator. Before a release takes traffic or
becomes known-good, :func:`probe_release` loads it **in a fresh process with a time limit**
(unpickling runs code, and a broken model may hang or crash the process that loads it) and
asks it one question: its contract's example (the input schema's ``examples``), else the
smallest input the contract allows, else one derived from the loaded model (its feature
names or width). The answer must be one prediction, without NaN or infinity.

:class:`Prober` is the seam the controller calls; unit tests pass an in-memory one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import backout
from backout.errors import BackoutError
from backout.registry.artifacts import BlobStore
from backout.registry.manifest import ReleaseManifest

PROBE_TIMEOUT_S = 60.0  # a cold Python, scikit-learn's import and a big unpickle, on a busy host


@dataclass(frozen=True, slots=True)
class Probe:
    """What loading a release in a fresh process and asking it one question showed."""

    ref: str
    ok: bool
    stage: str  # verify | load | answer | timeout | process: where it stopped (or "answer": done)
    detail: str  # one line: what failed, or what it answered
    request: dict[str, Any] | None = None  # the question it was asked
    answer: Any = None  # its predictions, as JSON
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref, "ok": self.ok, "stage": self.stage, "detail": self.detail,
            "request": self.request, "answer": self.answer, "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }  # fmt: skip


class Prober(Protocol):
    """Loads a release apart from the caller and asks it one question; never raises."""

    def __call__(self, manifest: ReleaseManifest, blobs: BlobStore, *, timeout_s: float) -> Probe:
        """Probe ``manifest``'s release (artifacts from ``blobs``) within ``timeout_s``."""
        ...


# -- the question ---------------------------------------------------------------------------


def minimal_instance(schema: Mapping[str, Any]) -> Any:
    """The smallest instance a JSON Schema of one input allows (best effort), or None."""
    examples = schema.get("examples")
    if isinstance(examples, list) and examples:
        return examples[0]
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        names = schema.get("required") or list(props)
        out = {}
        for name in names:
            value = minimal_instance(props.get(name) or {"type": "number"})
            out[str(name)] = 0.0 if value is None else value
        return out
    if kind == "array":
        items = schema.get("items")
        item = minimal_instance(items) if isinstance(items, Mapping) else 0.0
        return [0.0 if item is None else item] * max(int(schema.get("minItems") or 1), 1)
    if kind in ("number", "integer"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        value = float(low) if isinstance(low, int | float) else 0.0
        return int(value) if kind == "integer" else value
    if kind == "string":
        return "a" * int(schema.get("minLength") or 0)
    if kind == "boolean":
        return False
    return None


def example_request(manifest: ReleaseManifest, predictor: Any) -> tuple[dict[str, Any] | None, str]:
    """The question for a loaded release, and where it came from."""
    schema = manifest.contract.input
    if schema:
        instance = minimal_instance(schema)
        if instance is not None:
            source = "the contract's example" if schema.get("examples") else "the contract"
            return {"instances": [instance]}, source
    names = getattr(predictor, "feature_names", None)
    if names:
        return {"instances": [dict.fromkeys(names, 0.0)]}, "the model's feature names"
    width = getattr(predictor, "n_features", None)
    if isinstance(width, int) and width > 0:
        return {"instances": [[0.0] * width]}, "the model's input width"
    return None, ""


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


# -- the child process ----------------------------------------------------------------------


def probe_main() -> None:
    """The probing process: read the job on stdin, write one JSON line on the real stdout."""
    from backout.runtimes.base import load_verified
    from backout.runtimes.tensors import json_to_inputs, outputs_to_predictions

    # Whatever the model's code prints must not be taken for the answer.
    answer_to = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    job = json.loads(sys.stdin.read())
    manifest = ReleaseManifest.model_validate(job["manifest"])
    files = {k: Path(v) for k, v in job["files"].items()}

    def done(ok: bool, stage: str, detail: str, **more: Any) -> None:
        answer_to.write(json.dumps({"ok": ok, "stage": stage, "detail": detail, **more}) + "\n")
        answer_to.flush()

    try:
        predictor = load_verified(manifest, files, timeout_s=float(job["timeout_s"]))
    except BackoutError as exc:
        return done(False, "load", exc.message)
    except Exception as exc:  # a loader that raised something unexpected: still a failed load
        return done(False, "load", f"{type(exc).__name__}: {exc}")
    request, source = example_request(manifest, predictor)
    if request is None:
        return done(True, "load", "loaded; no contract and no input width to ask it a question",
                    notes=["answer not checked: register it with --contract to have it checked"])  # fmt: skip
    try:
        inputs = json_to_inputs(request, predictor.input_names, predictor.feature_names)
        predictions = outputs_to_predictions(asyncio.run(predictor.infer(inputs)))
    except BackoutError as exc:
        return done(
            False, "answer", f"it failed on {source}'s input: {exc.message}", request=request
        )
    except Exception as exc:
        return done(False, "answer", f"it failed on {source}'s input: {type(exc).__name__}: {exc}",
                    request=request)  # fmt: skip
    if len(predictions) != 1:
        return done(False, "answer", f"asked one instance, it answered {len(predictions)}",
                    request=request)  # fmt: skip
    if not _finite(predictions):
        return done(False, "answer", f"it answered {predictions[0]!r} (not finite) on {source}'s input",
                    request=request)  # fmt: skip
    done(True, "answer", f"loaded and answered {source}'s input", request=request,
         answer=json.loads(json.dumps(predictions, default=str)))  # fmt: skip


# -- the parent -----------------------------------------------------------------------------


def probe_release(
    manifest: ReleaseManifest, blobs: BlobStore, *, timeout_s: float = PROBE_TIMEOUT_S
) -> Probe:
    """Load ``manifest``'s release in a fresh process and ask it one question (see the module)."""
    from backout.runtimes.base import verify_artifacts

    ref = manifest.ref
    t0 = time.monotonic()
    try:
        files = verify_artifacts(manifest, blobs)
    except BackoutError as exc:
        return Probe(ref, False, "verify", exc.message)
    job = json.dumps({"manifest": manifest.model_dump(mode="json"), "timeout_s": timeout_s,
                      "files": {k: str(v) for k, v in files.items()}})  # fmt: skip
    # The child imports this very backout, whatever the caller's working directory.
    root = str(Path(backout.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen(
        [sys.executable, "-c", "from backout.runtimes.probe import probe_main; probe_main()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        start_new_session=True,  # so a timeout ends whatever the model's code started too
    )  # fmt: skip
    try:
        out, err = child.communicate(job.encode(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it ended just now
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return Probe(ref, False, "timeout",
                     f"it did not load and answer within {timeout_s:g} s", seconds=time.monotonic() - t0)  # fmt: skip
    seconds = time.monotonic() - t0
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        doc = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = err.decode(errors="replace").strip().splitlines()
        why = (
            f"killed by signal {-child.returncode}"
            if child.returncode < 0
            else f"exit status {child.returncode}"
        )
        last = f": {tail[-1][:200]}" if tail else ""
        return Probe(
            ref, False, "process", f"the process loading it died ({why}){last}", seconds=seconds
        )
    return Probe(ref, bool(doc["ok"]), str(doc["stage"]), str(doc["detail"]), request=doc.get("request"),
                 answer=doc.get("answer"), seconds=seconds, notes=list(doc.get("notes", [])))  # fmt: skip
