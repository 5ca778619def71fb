"""Capture and replay: sampled, scrubbed captures; replay against a target, robust to bad rows."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa

from backout.control.controller import Controller
from backout.control.policy import parse_policy
from backout.errors import ArtifactCorrupt
from backout.proof.replay import Limits, load_captures, record_envelope, replay
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.serving.app import Gateway, GatewaySettings
from backout.serving.capture import CaptureBuffer, scrub, write_captures
from backout.store import Store, schema
from backout.traffic.deployments import CaptureRule, Deployments
from tests.loopback import serve
from tests.models import iris, register_iris

pytestmark = pytest.mark.databases("sqlite")


@pytest.fixture
def world(
    store: Store, registry: Registry, blobs: LocalBlobStore, tmp_path: Path
) -> tuple[Store, Registry, LocalBlobStore]:
    """iris@1.0.0 and a much weaker iris@1.1.0, registered with their contracts."""
    register_iris(registry, tmp_path / "models", "1.0.0", c=1.0)
    register_iris(registry, tmp_path / "models", "1.1.0", c=0.01)
    return store, registry, blobs


def _capture(
    store: Store,
    rows: list[list[float]],
    version: str = "1.0.0",
    answers: list[object] | None = None,
) -> None:
    buf = CaptureBuffer()
    for i, row in enumerate(rows):
        answer = answers[i] if answers else {"label": 0, "probabilities": [1.0, 0.0, 0.0]}
        buf.add("iris", version, f"r{i}", "json", 0.002, {"instances": [row]}, [answer])
    write_captures(store, buf.drain(), {})


def test_scrub_redacts_and_hashes_named_fields() -> None:
    rule = CaptureRule(redact=frozenset({"ssn"}), hash=frozenset({"email"}))
    out = scrub([{"ssn": "123", "email": "a@b.c", "x": 1}], rule)
    assert out[0]["ssn"] == "[redacted]"
    assert out[0]["email"].startswith("sha256:") and "a@b.c" not in out[0]["email"]
    assert out[0]["x"] == 1


def test_the_capture_log_is_bounded_per_model(
    world: tuple[Store, Registry, LocalBlobStore],
) -> None:
    store, _, _ = world
    buf = CaptureBuffer()
    for i in range(30):
        buf.add("iris", "1.0.0", f"r{i}", "json", 0.001, {"instances": [[1, 2, 3, 4]]}, [0])
    write_captures(store, buf.drain(), {"iris": 10})
    rows = load_captures(store, "iris")
    assert len(rows) == 10 and rows[-1].request_id == "r29"


def test_replaying_the_release_that_answered_agrees_fully(
    world: tuple[Store, Registry, LocalBlobStore],
) -> None:
    store, registry, blobs = world
    x, _ = iris()
    import asyncio

    from backout.runtimes import load_release
    from backout.runtimes.tensors import outputs_to_predictions

    predictor = load_release(registry.get("iris@1.0.0").manifest, blobs)
    answers = [
        outputs_to_predictions(asyncio.run(predictor.infer({"input": x[i : i + 1]})))[0]
        for i in range(60)
    ]
    _capture(store, x[:60].tolist(), answers=answers)
    report = replay(store, registry, blobs, "iris@1.0.0")
    assert (report.replayed, report.errors, report.rejected, report.skipped) == (60, 0, 0, 0)
    assert report.agreement == 1.0
    assert report.within_envelope
    weaker = replay(store, registry, blobs, "iris@1.1.0", limits=Limits(min_agreement=0.99))
    assert weaker.agreement is not None and weaker.agreement < 1.0


def test_corrupt_capture_rows_are_skipped_and_counted(
    world: tuple[Store, Registry, LocalBlobStore],
) -> None:
    store, registry, blobs = world
    x, _ = iris()
    _capture(store, x[:10].tolist())
    with store.write() as conn:
        conn.execute(
            schema.captures.update()
            .where(schema.captures.c.request_id.in_(["r1", "r2"]))
            .values(request="{trunc")
        )
    report = replay(store, registry, blobs, "iris@1.0.0")
    assert report.skipped == 2 and report.replayed == 8


def test_requests_the_target_rejects_are_counted_not_raised(
    world: tuple[Store, Registry, LocalBlobStore],
) -> None:
    store, registry, blobs = world
    _capture(store, [[1.0, 2.0]] * 5 + [[5.1, 3.5, 1.4, 0.2]] * 5)  # five of the wrong width
    report = replay(store, registry, blobs, "iris@1.0.0")
    assert report.rejected == 5 and report.replayed == 10
    assert not report.within_envelope
    assert "error rate 50.00%" in report.summary()


def test_a_target_that_cannot_load_is_a_clear_error(
    world: tuple[Store, Registry, LocalBlobStore],
) -> None:
    store, registry, blobs = world
    _capture(store, [[5.1, 3.5, 1.4, 0.2]])
    sha = registry.get("iris@1.1.0").manifest.artifacts[0].sha256
    path = blobs.blob_path(sha)
    os.chmod(path, 0o644)
    path.write_bytes(b"not the model")
    with pytest.raises(ArtifactCorrupt, match=r"iris@1\.1\.0"):
        replay(store, registry, blobs, "iris@1.1.0")


def test_a_live_envelope_never_judges_a_replays_latency(
    world: tuple[Store, Registry, LocalBlobStore],
) -> None:
    """An envelope from live load and a p99 from a replay are not comparable (finding 4)."""
    store, registry, blobs = world
    _capture(store, [[5.1, 3.5, 1.4, 0.2]] * 20)
    with store.write() as conn:
        conn.execute(schema.envelopes.insert().values(model="iris", version="1.0.0", recorded_at=0.0,
                                                      data={"p99_ms": 1e-6, "error_rate": 0.0}))  # fmt: skip
    report = replay(store, registry, blobs, "iris@1.0.0")
    assert report.within_envelope, report.judge()
    assert report.to_dict()["latency"]["compared"] == "none"


def test_labels_give_accuracy(world: tuple[Store, Registry, LocalBlobStore]) -> None:
    store, registry, blobs = world
    x, y = iris()
    buf = CaptureBuffer()
    for i in range(0, 150, 5):
        buf.add("iris", "1.0.0", f"r{i}", "json", 0.001, {"instances": [x[i].tolist()]}, [{"label": int(y[i])}],
                labels=[int(y[i])])  # fmt: skip
    write_captures(store, buf.drain(), {})
    report = replay(store, registry, blobs, "iris@1.0.0")
    assert report.labelled == 30 and report.accuracy is not None and report.accuracy > 0.9


def test_the_gateway_captures_a_sample_with_fields_redacted(
    world: tuple[Store, Registry, LocalBlobStore], tmp_path: Path
) -> None:
    store, registry, blobs = world
    Deployments(store, registry).set_traffic("iris", {"1.0.0": 100}, actor="t")
    Controller(store, registry).set_policy(
        "iris", parse_policy("capture: {rate: 1.0, redact: [note]}"), source="t", actor="t"
    )
    gateway = Gateway(store, blobs, GatewaySettings(flush_interval_s=0.1))
    with serve(gateway.app) as url, httpx.Client(base_url=url) as client:
        for i in range(5):
            r = client.post("/models/iris/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]], "note": "secret"},
                            headers={"x-request-id": f"req-{i}"})  # fmt: skip
            assert r.status_code == 200
        gateway.flush()
        r = client.post("/backout/feedback", json={"request_id": "req-3", "labels": [0]})
        assert r.status_code == 200
        assert (
            client.post("/backout/feedback", json={"request_id": "nope", "labels": [0]}).status_code
            == 404
        )
    rows = load_captures(store, "iris")
    assert [r.request_id for r in rows] == [f"req-{i}" for i in range(5)]
    assert "secret" not in rows[0].request and orjson.loads(rows[0].request)["note"] == "[redacted]"
    assert orjson.loads(rows[3].labels) == [0]


def test_envelope_summarises_production_telemetry(
    world: tuple[Store, Registry, LocalBlobStore],
) -> None:
    from backout.telemetry.batches import Batch, write_batches

    store, _, _ = world
    b = Batch("iris", "1.0.0", start=100.0, end=101.0)
    for _ in range(50):
        b.observe(0.004)
    write_batches(store, [b], "w")
    env = record_envelope(store, "iris", "1.0.0", since=100.0, until=110.0)
    assert env is not None and env["requests"] == 50 and 3.5 < env["p99_ms"] < 4.5
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.envelopes)).scalar() == 1
