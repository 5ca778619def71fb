"""A release that cannot load on this gateway: the stable release answers for it, its
failures count against it, pinned callers are told, readiness tells the truth, and it is
loaded by itself once it can be."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from backout.control.triggers import evaluate
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.serving.app import Gateway, GatewaySettings
from backout.telemetry.batches import read_batches, sum_batches
from backout.traffic.deployments import Deployments
from tests.loopback import serve
from tests.models import register_iris
from tests.serving.world import ROW

ERROR_RATE = SimpleNamespace(kind="error_rate", name="errors", max_rate=0.05, min_requests=10)


class Broken:
    """iris 1.0.0 and 2.0.0, both good, on a gateway whose own artifact copy lacks 2.0.0's
    blob (a replica that missed it): 2.0.0 passes every check but cannot load here."""

    def __init__(self, tmp: Path) -> None:
        from backout.store import open_store

        self.store = open_store(f"sqlite:///{tmp / 'store.db'}", create=True)
        self.registry = Registry(self.store, LocalBlobStore(tmp / "artifacts"))
        register_iris(self.registry, tmp / "models", "1.0.0", c=1.0)
        register_iris(self.registry, tmp / "models", "2.0.0", c=0.01)
        self.deployments = Deployments(self.store, self.registry)
        self.deployments.set_traffic("iris", {"1.0.0": 100}, actor="test")
        shutil.copytree(tmp / "artifacts", tmp / "gateway-artifacts")
        self.gateway_blobs = LocalBlobStore(tmp / "gateway-artifacts")
        digest = self.registry.get("iris@2.0.0").manifest.artifacts[0].sha256
        self.blob = self.gateway_blobs.blob_path(digest)
        self.saved = tmp / "saved-blob"
        shutil.move(self.blob, self.saved)
        settings = GatewaySettings(poll_interval_s=0.005, flush_interval_s=0.2)
        self.gateway = Gateway(self.store, self.gateway_blobs, settings)
        self.http: httpx.Client

    def set_traffic(self, weights: dict[str, float], **kw: object) -> None:
        self.deployments.set_traffic("iris", weights, actor="test", **kw)  # type: ignore[arg-type]
        target = self.deployments.generation()
        deadline = time.monotonic() + 10
        while self.gateway.live.generation < target:
            assert time.monotonic() < deadline, "the gateway did not pick up the new routes"
            time.sleep(0.005)

    def predict(self, **headers: str) -> httpx.Response:
        return self.http.post("/models/iris/predict", json={"instances": [ROW]}, headers=headers)

    def totals(self) -> dict[str, object]:
        self.gateway.flush()
        return {v: sum_batches(bs) for v, bs in read_batches(self.store, "iris").items()}


@pytest.fixture
def broken(tmp_path: Path) -> Iterator[Broken]:
    world = Broken(tmp_path)
    with serve(world.gateway.app) as url, httpx.Client(base_url=url, timeout=10) as http:
        world.http = http
        yield world
    world.store.dispose()


def test_unpinned_requests_fall_back_to_the_stable_release_and_count_against_the_broken_one(
    broken: Broken,
) -> None:
    broken.set_traffic({"1.0.0": 50, "2.0.0": 50})
    answers = [broken.predict() for _ in range(200)]
    assert all(r.status_code == 200 and r.json()["version"] == "1.0.0" for r in answers)
    stood_in = sum(r.headers.get("x-backout-stood-in-for") == "iris@2.0.0" for r in answers)
    assert 50 < stood_in < 150
    totals = broken.totals()
    bad, good = totals["2.0.0"], totals["1.0.0"]
    assert bad is not None and good is not None
    assert (bad.requests, bad.predictions, bad.errors) == (stood_in, 0, {"load": stood_in})  # type: ignore[attr-defined]
    assert (good.requests, good.errors) == (200, {})  # type: ignore[attr-defined]
    # The broken release's triggers see it fail every request routed to it.
    assert evaluate(ERROR_RATE, [bad]).fired  # type: ignore[list-item]
    metrics = broken.http.get("/metrics").text
    line = 'backout_errors_total{cause="release",kind="load",model="iris",release="2.0.0"}'
    assert f"{line} {float(stood_in)}" in metrics


def test_a_pinned_request_gets_503_naming_the_release(broken: Broken) -> None:
    broken.set_traffic({"1.0.0": 90, "2.0.0": 10})
    r = broken.predict(**{"x-backout-version": "2.0.0"})
    assert r.status_code == 503
    error = r.json()["error"]
    assert error.startswith("release iris@2.0.0 could not be loaded: release iris@2.0.0 cannot")
    assert "not in the artifact store" in error and "pinned to it" in error
    assert r.headers["x-backout-release"] == "iris@2.0.0"
    assert broken.totals()["2.0.0"].errors == {"load": 1}  # type: ignore[attr-defined]


def test_a_key_pinned_in_the_route_table_is_not_moved_either(broken: Broken) -> None:
    broken.set_traffic({"1.0.0": 100}, pins={"consumer-7": "2.0.0"})
    r = broken.predict(**{"x-backout-key": "consumer-7"})
    assert r.status_code == 503 and "pinned to it" in r.json()["error"]
    assert broken.predict(**{"x-backout-key": "consumer-8"}).json()["version"] == "1.0.0"


def test_with_no_loaded_release_to_stand_in_the_answer_is_503(broken: Broken) -> None:
    broken.set_traffic({"2.0.0": 100})
    r = broken.predict()
    assert r.status_code == 503 and "no loaded release of iris can stand in" in r.json()["error"]
    assert broken.totals()["2.0.0"].errors == {"load": 1}  # type: ignore[attr-defined]


def test_readiness_tells_the_truth(broken: Broken) -> None:
    assert broken.http.get("/v2/models/iris/ready").status_code == 200
    broken.set_traffic({"1.0.0": 90, "2.0.0": 10})
    r = broken.http.get("/v2/models/iris/ready")
    assert r.status_code == 503 and r.json()["ready"] is False
    assert "not in the artifact store" in r.json()["not_loaded"]["iris@2.0.0"]
    assert broken.http.get("/v2/models/iris/versions/1.0.0/ready").status_code == 200
    r = broken.http.get("/v2/models/iris/versions/2.0.0/ready")
    assert r.status_code == 503 and "not in the artifact store" in r.json()["reason"]
    assert broken.http.get("/v2/health/ready").status_code == 503
    assert broken.http.get("/v2/models/iris/versions/9.9.9/ready").status_code == 404
    meta = broken.http.get("/v2/models/iris")  # what an unpinned caller gets: the stable one
    assert meta.status_code == 200


def test_it_loads_by_itself_once_it_can_and_logs_once_per_fault(
    broken: Broken, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="backout.pool")
    broken.set_traffic({"1.0.0": 90, "2.0.0": 10})
    broken.set_traffic({"1.0.0": 80, "2.0.0": 20})  # route changes while it is still broken
    time.sleep(1.5)  # and at least one retry
    shutil.move(broken.saved, broken.blob)
    deadline = time.monotonic() + 15
    while broken.http.get("/v2/models/iris/ready").status_code != 200:
        assert time.monotonic() < deadline, "the release was not loaded once its blob was back"
        time.sleep(0.1)
    assert broken.predict(**{"x-backout-version": "2.0.0"}).status_code == 200
    lines = [
        (r.levelname, r.getMessage()) for r in caplog.records if "iris@2.0.0" in r.getMessage()
    ]
    assert [level for level, _ in lines] == ["ERROR", "WARNING"], lines
    assert lines[0][1].startswith("cannot load iris@2.0.0: release iris@2.0.0 cannot be loaded")
    assert lines[1][1].startswith("loaded iris@2.0.0 after ")
