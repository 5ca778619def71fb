"""The replay's latency check compares like with like: a replay against a replay of the
release it would replace, on the same requests, never against a p99 from live load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
from sklearn.linear_model import LogisticRegression

from backout.control.controller import Controller
from backout.control.policy import parse_policy
from backout.proof.replay import replay
from backout.registry.artifacts import LocalBlobStore
from backout.registry.manifest import Runtime, RuntimeKind
from backout.registry.releases import Registry
from backout.serving.capture import CaptureBuffer, write_captures
from backout.store import Store, audit, open_store, schema
from tests.models import iris, register_iris

SLOW = """
import time

import joblib


class Model:
    outputs = ["label", "probabilities"]

    def __init__(self, artifacts):
        self.model = joblib.load(artifacts["iris.joblib"])

    def predict(self, inputs):
        time.sleep(0.02)
        x = inputs["input"]
        return {"label": self.model.predict(x), "probabilities": self.model.predict_proba(x).astype("float32")}
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Store, Registry, LocalBlobStore]]:
    """iris@1.0.0 (fast) and iris@2.0.0 (the same model, 20 ms slower), with captures."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", create=True)
    blobs = LocalBlobStore(tmp_path / "artifacts")
    registry = Registry(store, blobs)
    register_iris(registry, tmp_path / "m", "1.0.0")
    x, y = iris()
    (tmp_path / "slow").mkdir()
    model = LogisticRegression(max_iter=500).fit(x, y)  # the same model as iris@1.0.0
    joblib.dump(model, tmp_path / "slow" / "iris.joblib")
    (tmp_path / "slow" / "scoring.py").write_text(SLOW)
    registry.register("iris", "2.0.0", [tmp_path / "slow" / "iris.joblib", tmp_path / "slow" / "scoring.py"],
                      runtime=Runtime(kind=RuntimeKind.PYTHON, options={"entrypoint": "scoring:Model"}),
                      contract=registry.get("iris@1.0.0").manifest.contract, actor="t")  # fmt: skip
    buf = CaptureBuffer()
    for i, (row, label) in enumerate(
        zip(x[::5].tolist(), model.predict(x[::5]).tolist(), strict=True)
    ):
        buf.add("iris", "1.0.0", f"r{i}", "json", 0.002, {"instances": [row]}, [{"label": label}])
    write_captures(store, buf.drain(), {})
    # An envelope from live load, far below what any in-process replay measures (the tour's
    # 0.38 ms): it must not decide anything about a replay.
    with store.write() as conn:
        for v in ("1.0.0", "2.0.0"):
            conn.execute(schema.envelopes.insert().values(model="iris", version=v, recorded_at=0.0,
                                                          data={"p99_ms": 0.001, "source": "live"}))  # fmt: skip
    yield store, registry, blobs
    store.dispose()


def test_a_slower_target_fails_against_its_baseline_replayed_side_by_side(
    world: tuple[Store, Registry, LocalBlobStore],
) -> None:
    store, registry, blobs = world
    report = replay(store, registry, blobs, "iris@2.0.0", baseline="1.0.0")
    cmp = report.to_dict()["latency"]
    assert cmp["compared"] == "replay-vs-replay" and cmp["baseline"] == "iris@1.0.0"
    assert cmp["target_ms"] > 15 and len(report.baseline_latencies_ms) == report.replayed
    assert any("iris@1.0.0's" in f and "side by side" in f for f in report.judge()), report.judge()


def test_the_way_back_to_a_faster_release_passes_whatever_the_live_envelope_says(
    world: tuple[Store, Registry, LocalBlobStore],
) -> None:
    store, registry, blobs = world
    report = replay(store, registry, blobs, "iris@1.0.0", baseline="2.0.0", limits=None)
    latency = report.to_dict()["latency"]
    assert latency["compared"] == "replay-vs-replay"
    assert not any("latency" in f for f in report.judge()), report.judge()


def test_a_baseline_that_cannot_load_never_blocks_the_way_back(
    world: tuple[Store, Registry, LocalBlobStore], tmp_path: Path
) -> None:
    store, registry, blobs = world
    (tmp_path / "junk.joblib").write_bytes(b"")
    registry.register("iris", "3.0.0", [tmp_path / "junk.joblib"], actor="t")
    report = replay(store, registry, blobs, "iris@1.0.0", baseline="3.0.0")
    latency = report.to_dict()["latency"]
    assert latency["compared"] == "none" and "iris@3.0.0 could not be loaded" in latency["why"]
    assert not any("latency" in f for f in report.judge())


def test_the_tours_rollback_to_the_release_on_99_percent_is_not_refused_by_its_envelope(
    world: tuple[Store, Registry, LocalBlobStore],
) -> None:
    """The tour: 1.5.0 (slow) failed its gate; the way back to 1.4.0 was refused by a replay
    p99 compared with a live envelope, and the model froze. Now the rollback goes through."""
    store, registry, _ = world
    controller = Controller(store, registry)
    controller.set_policy("iris", parse_policy("rollback: {mode: staged}"), source="t", actor="t")
    controller.deploy("iris", "1.0.0", actor="t")
    # 2.0.0 carries 99% (the deploy's own replay would refuse it: it is slower than 1.0.0).
    controller.set_traffic("iris", {"1.0.0": 1, "2.0.0": 99}, actor="t")
    op = controller.rollback("iris", actor="t", to="1.0.0", emergency=False)
    assert op.target == "1.0.0" and op.stable == "2.0.0" and not controller.frozen("iris")
    with store.read() as conn:
        replayed = audit.latest(conn, "iris", ["replay.pass", "replay.fail"])
    assert replayed is not None and replayed.kind == "replay.pass", replayed.reason
    assert replayed.data["evidence"]["latency"]["compared"] == "replay-vs-replay"
