"""Garbage is not a model: a release loads and answers (in its own process, in time) before
it takes traffic or becomes known-good, and a pass is remembered per release digest."""

from __future__ import annotations

import os
import time
from pathlib import Path

import joblib
import pytest
from sklearn.linear_model import LogisticRegression

from backout.control.controller import Controller
from backout.errors import ValidationError
from backout.registry.artifacts import BlobStore, LocalBlobStore
from backout.registry.manifest import ReleaseManifest, Runtime, RuntimeKind
from backout.registry.releases import Registry
from backout.runtimes.probe import Probe, minimal_instance, probe_release
from backout.store import audit, open_store
from tests.models import register_iris


class CountingProber:
    """The real subprocess probe, counted."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, manifest: ReleaseManifest, blobs: BlobStore, *, timeout_s: float) -> Probe:
        self.calls.append(manifest.ref)
        return probe_release(manifest, blobs, timeout_s=timeout_s)


@pytest.fixture
def site(tmp_path: Path) -> tuple[Controller, Registry, CountingProber]:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", create=True)
    registry = Registry(store, LocalBlobStore(tmp_path / "artifacts"))
    prober = CountingProber()
    return Controller(store, registry, prober=prober), registry, prober


def register_garbage(registry: Registry, tmp_path: Path, version: str, kind: str) -> None:
    if kind == "/dev/null":
        path = Path("/dev/null")
    else:
        path = tmp_path / f"{kind}-{version}.joblib"
        # Random bytes that open like a zlib stream or a pickle send joblib down other paths.
        head = {"zlib header": b"\x78\x9c", "pickle header": b"\x80\x04"}.get(kind, b"")
        path.write_bytes(b"" if kind == "empty" else head + os.urandom(4096))
    registry.register("iris", version, [path], runtime=Runtime(kind=RuntimeKind.SKLEARN), actor="t")


@pytest.mark.parametrize("kind", ["empty", "/dev/null", "random", "zlib header", "pickle header"])
def test_garbage_is_refused_as_a_first_deploy_and_nothing_goes_live(
    site: tuple[Controller, Registry, CountingProber], tmp_path: Path, kind: str
) -> None:
    controller, registry, _ = site
    register_garbage(registry, tmp_path, "0.1.0", kind)
    with pytest.raises(ValidationError) as err:
        controller.deploy("iris", "0.1.0", actor="ana")
    message = err.value.message
    assert message.startswith("iris@0.1.0 cannot be deployed: it failed its load-and-answer check")
    assert "not a joblib or pickle file" in message and "\n" not in message
    assert controller.deployments.get("iris") is None
    assert not registry.get("iris@0.1.0").known_good
    with controller.store.read() as conn:
        assert audit.latest(conn, "iris", ["load.fail"]) is not None


def test_garbage_cannot_be_marked_known_good_take_traffic_or_be_a_rollback_target(
    site: tuple[Controller, Registry, CountingProber], tmp_path: Path
) -> None:
    controller, registry, _ = site
    register_iris(registry, tmp_path / "m", "1.0.0")
    register_iris(registry, tmp_path / "m", "1.1.0", c=0.5)
    register_garbage(registry, tmp_path, "0.9.0", "random")
    controller.deploy("iris", "1.0.0", actor="ana")
    with pytest.raises(ValidationError, match=r"^iris@0.9.0 cannot be marked known-good: "):
        controller.mark_good("iris@0.9.0", actor="ana")
    assert not registry.get("iris@0.9.0").known_good
    with pytest.raises(ValidationError, match=r"^iris@0.9.0 cannot take traffic: "):
        controller.set_traffic("iris", {"1.0.0": 90, "0.9.0": 10}, actor="ana")
    # A mark written before this check existed (straight into the registry) is no way round.
    registry.mark_good("iris@0.9.0", actor="old")
    with pytest.raises(ValidationError, match=r"^iris@0.9.0 cannot be a rollback target: "):
        controller.rollback("iris", actor="ana", to="0.9.0", emergency=True)
    assert controller.deployments.require("iris").weights == {"1.0.0": 10_000}
    assert controller.active("iris") is None


def test_a_pass_is_paid_once_per_release_digest(
    site: tuple[Controller, Registry, CountingProber], tmp_path: Path
) -> None:
    controller, registry, prober = site
    register_iris(registry, tmp_path / "m", "1.0.0")
    register_iris(registry, tmp_path / "m", "1.1.0", c=0.5)
    controller.deploy("iris", "1.0.0", actor="ana")
    controller.mark_good("iris@1.0.0", actor="ana")
    controller.set_traffic("iris", {"1.0.0": 100}, actor="ana")
    assert prober.calls == ["iris@1.0.0"]
    # Another process on the same store finds the pass too.
    other = Controller(controller.store, registry, prober=prober)
    other.set_traffic("iris", {"1.0.0": 90, "1.1.0": 10}, actor="ana")
    other.set_traffic("iris", {"1.0.0": 80, "1.1.0": 20}, actor="ana")
    assert prober.calls == ["iris@1.0.0", "iris@1.1.0"]


def test_a_model_that_loads_but_cannot_answer_is_refused(
    site: tuple[Controller, Registry, CountingProber], tmp_path: Path
) -> None:
    """An unfitted estimator unpickles fine and has predict; asked a question, it fails."""
    controller, registry, _ = site
    path = tmp_path / "unfitted.joblib"
    joblib.dump(LogisticRegression(), path)
    contract = {
        "input": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}
    }
    registry.register("iris", "0.2.0", [path], runtime=Runtime(kind=RuntimeKind.SKLEARN),
                      contract=contract, actor="t")  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(ValidationError, match=r"\(answer\): it failed on the contract's input"):
        controller.deploy("iris", "0.2.0", actor="ana")


def test_a_release_that_hangs_while_loading_is_stopped_at_the_time_limit(
    site: tuple[Controller, Registry, CountingProber], tmp_path: Path
) -> None:
    controller, registry, _ = site
    code = tmp_path / "scoring.py"
    code.write_text("import time\ntime.sleep(600)\n\ndef predict(inputs):\n    return inputs\n")
    registry.register("iris", "0.3.0", [code], actor="t",
                      runtime=Runtime(kind=RuntimeKind.PYTHON, options={"entrypoint": "scoring:predict"}))  # fmt: skip
    controller.probe_timeout_s = 3.0
    t0 = time.monotonic()
    with pytest.raises(
        ValidationError, match=r"\(timeout\): it did not load and answer within 3 s"
    ):
        controller.deploy("iris", "0.3.0", actor="ana")
    assert time.monotonic() - t0 < 30


def test_the_probe_answers_a_real_model_and_says_what_it_asked(
    site: tuple[Controller, Registry, CountingProber], tmp_path: Path
) -> None:
    _, registry, _ = site
    register_iris(registry, tmp_path / "m", "1.0.0")
    probe = probe_release(registry.get("iris@1.0.0").manifest, registry.blobs)
    assert probe.ok and probe.stage == "answer", probe.detail
    assert probe.request == {"instances": [[0.0, 0.0, 0.0, 0.0]]}
    assert isinstance(probe.answer, list) and len(probe.answer) == 1


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ({"type": "array", "items": {"type": "number"}, "minItems": 3}, [0.0, 0.0, 0.0]),
        ({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "integer", "minimum": 2}},
          "required": ["a", "b"]}, {"a": 0.0, "b": 2}),
        ({"type": "object", "properties": {"c": {"enum": ["x", "y"]}}}, {"c": "x"}),
        ({"type": "array", "items": {"type": "number"}, "examples": [[1.5, 2.5]]}, [1.5, 2.5]),
        ({"type": ["null", "boolean"]}, False),
    ],
)  # fmt: skip
def test_the_question_is_the_contracts_example_or_the_smallest_input_it_allows(
    schema: dict[str, object], instance: object
) -> None:
    assert minimal_instance(schema) == instance
