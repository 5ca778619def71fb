"""Gateway replicas on one store.

A route change reaches every replica on PostgreSQL by LISTEN/NOTIFY (the safety-net poll
is set far beyond the test's wait, so nothing else could have told them). A replica that
loses the store keeps serving its last route table (fail-static), says so on
``/v2/health/ready`` (still ready, ``degraded``) and on ``/metrics``, keeps its telemetry up
to a bound (the oldest dropped, counted) and writes it once the store is back.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from backout.errors import StoreUnavailable
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.serving.app import Gateway, GatewaySettings
from backout.store import Store, open_store, schema
from backout.telemetry.batches import read_batches
from backout.traffic.deployments import Deployments
from tests.loopback import serve
from tests.models import register_iris
from tests.postgres_server import PostgresServer
from tests.waits import wait_for

BODY = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


def _site(store: Store, tmp_path: Path) -> tuple[Registry, LocalBlobStore]:
    blobs = LocalBlobStore(tmp_path / "artifacts")
    registry = Registry(store, blobs)
    for version in ("1.0.0", "1.1.0"):
        register_iris(registry, tmp_path / "models", version)
    Deployments(store, registry).set_traffic("iris", {"1.0.0": 100}, actor="test")
    return registry, blobs


@contextmanager
def _replicas(
    url: str, blobs: LocalBlobStore, n: int, settings: GatewaySettings
) -> Iterator[list[tuple[Gateway, str]]]:
    """``n`` gateways, each with a store connection of its own, served on loopback."""
    with ExitStack() as stack:
        out = []
        for _ in range(n):
            store = open_store(url, migrate=False)
            stack.callback(store.dispose)
            gw = Gateway(store, blobs, settings)
            out.append((gw, stack.enter_context(serve(gw.app))))
        yield out


def _released(base: str) -> str:
    r = httpx.post(f"{base}/models/iris/predict", json=BODY, timeout=10)
    assert r.status_code == 200, r.text
    return r.headers["x-backout-release"]


def _metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.databases("postgresql")
def test_every_replica_on_postgres_learns_of_a_route_change_by_notify(
    store: Store, tmp_path: Path
) -> None:
    registry, blobs = _site(store, tmp_path)
    settings = GatewaySettings(recheck_s=3600.0, flush_interval_s=3600.0)
    with _replicas(str(store.url.render_as_string(False)), blobs, 3, settings) as replicas:
        assert {_released(base) for _, base in replicas} == {"iris@1.0.0"}
        table = Deployments(store, registry).set_traffic("iris", {"1.1.0": 100}, actor="test")
        for gw, base in replicas:
            wait_for(lambda gw=gw: gw.live.generation == table.generation, 10,  # type: ignore[misc]
                     f"a replica on generation {table.generation} (by NOTIFY)")  # fmt: skip
            assert _released(base) == "iris@1.1.0"


def test_telemetry_kept_during_an_outage_is_bounded_counted_and_written_on_return(
    tmp_path: Path,
) -> None:
    """Five flushes fail with room for three batches: the two oldest are dropped and
    counted; the three newest reach the store when it returns."""
    db = tmp_path / "store.db"
    store = open_store(f"sqlite:///{db}", create=True)
    _, blobs = _site(store, tmp_path)
    gw = Gateway(store, blobs, GatewaySettings(flush_interval_s=3600, max_unsent_batches=3))
    with serve(gw.app) as base:
        os.rename(db, db.with_name("away.db"))
        for round_ in range(1, 6):  # round i sends i requests: one batch per round
            for _ in range(round_):
                _released(base)
            with pytest.raises(StoreUnavailable):
                gw.flush()
        assert gw.dropped == {"batches": 2, "captures": 0, "requests": 1 + 2}
        assert _metric(base, 'backout_telemetry_dropped_total{kind="batches"}') == 2
        assert _metric(base, "backout_telemetry_unsent_batches") == 3
        os.rename(db.with_name("away.db"), db)
        gw.flush()
        assert _metric(base, "backout_telemetry_unsent_batches") == 0
    stored = read_batches(store, "iris")["1.0.0"]  # merged per second by the reader
    assert sum(b.requests for b in stored) == 3 + 4 + 5
    store.dispose()


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_a_replica_serves_its_last_routes_while_postgres_is_stopped_and_catches_up(
    tmp_path: Path,
) -> None:
    server = PostgresServer().start()
    try:
        url = server.create_database()
        store = open_store(url, create=True)
        registry, blobs = _site(store, tmp_path)
        settings = GatewaySettings(flush_interval_s=0.2, max_unsent_batches=5)
        with _replicas(url, blobs, 1, settings) as [(gw, base)]:
            sent = 0

            def send(seconds: float) -> None:
                nonlocal sent
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    assert _released(base) == "iris@1.0.0"  # never a failed request
                    sent += 1
                    time.sleep(0.01)

            send(0.5)
            server.halt()

            def degraded() -> bool:
                send(0.1)
                doc = httpx.get(f"{base}/v2/health/ready", timeout=10)
                return doc.status_code == 200 and doc.json()["degraded"]

            wait_for(degraded, 20, "the replica to report the store unreachable")
            assert _metric(base, "backout_store_reachable") == 0
            wait_for(lambda: send(0.1) or gw.dropped["batches"] > 0, 20,
                     "the telemetry buffer to overflow")  # fmt: skip
            send(0.5)
            health = httpx.get(f"{base}/v2/health/ready", timeout=10).json()["store"]
            assert health["unsent"]["batches"] <= 5 and health["unreachable_s"] > 0
            server.resume()
            wait_for(lambda: send(0.1) or gw.store_health()["reachable"], 30,
                     "the replica to reach the store again")  # fmt: skip
            assert _metric(base, "backout_store_reachable") == 1
            table = Deployments(store, registry).set_traffic("iris", {"1.1.0": 100}, actor="t")
            wait_for(lambda: gw.live.generation == table.generation, 10,
                     "the route change made after the outage")  # fmt: skip
            assert _released(base) == "iris@1.1.0"
            sent += 1
            gw.flush()
            dropped = gw.dropped["requests"]
        with store.read() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(schema.telemetry)).scalar()
        stored = sum(b.requests for bs in read_batches(store, "iris").values() for b in bs)
        assert rows and dropped > 0
        assert stored + dropped == sent, (stored, dropped, sent)
        store.dispose()
    finally:
        server.stop()
