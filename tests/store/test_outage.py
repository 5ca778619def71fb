"""A store outage is one log line when it starts and one when it ends; a gateway worker
refuses route state from another store or an older generation, and keeps its telemetry."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backout.errors import StoreUnavailable
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.serving.app import Gateway, GatewaySettings
from backout.serving.changes import StateGuard
from backout.store import Outage, Store, open_store
from backout.telemetry.batches import read_batches
from backout.traffic.deployments import Deployments, LiveState
from tests.loopback import serve
from tests.models import register_iris


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_fault_is_one_line_when_it_starts_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = Outage(logging.getLogger("backout.test"), "route refresh", clock=clock)
    caplog.set_level(logging.WARNING)
    assert not outage.recovered()  # nothing to say while healthy
    for _ in range(93):  # one failed poll a second for ninety-three seconds
        outage.failed(StoreUnavailable("store 'sqlite:///x.db' is unavailable: gone"))
        clock.now += 1.0
    assert outage.recovered("serving generation 7")
    assert [r.getMessage() for r in caplog.records] == [
        "route refresh failed: store 'sqlite:///x.db' is unavailable: gone; retrying quietly "
        "until it recovers",
        "route refresh recovered after 93.0 s and 93 failed attempt(s) (serving generation 7)",
    ]
    assert all(r.exc_info is None for r in caplog.records)  # backout's own error: no traceback


def test_a_new_kind_of_fault_and_a_bug_are_said_too(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage(logging.getLogger("backout.test"), "controller loop")
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        outage.failed(StoreUnavailable("locked"))
    for _ in range(3):
        outage.failed(KeyError("phase"))
    assert len(caplog.records) == 2
    assert caplog.records[1].exc_info is not None  # a bug keeps its traceback, once


def _state(generation: int, store_id: str | None) -> LiveState:
    return LiveState(generation, {}, {}, {}, store_id=store_id)


def test_a_worker_never_takes_state_from_another_store_or_an_older_generation(
    store: Store,
) -> None:
    guard = StateGuard(store)
    serving = _state(12, "a" * 32)
    guard.check(_state(-1, None), serving)
    guard.accepted(serving)
    guard.check(serving, _state(13, "a" * 32))  # newer, same store: fine
    with pytest.raises(StoreUnavailable, match="not the one this worker serves"):
        guard.check(serving, _state(0, "b" * 32))  # an empty store made where the real one was
    with pytest.raises(StoreUnavailable, match="went back from routes generation 12 to 3"):
        guard.check(serving, _state(3, "a" * 32))


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Gateway, str, Path]]:
    db = tmp_path / "store.db"
    store = open_store(f"sqlite:///{db}", create=True)
    blobs = LocalBlobStore(tmp_path / "artifacts")
    registry = Registry(store, blobs)
    register_iris(registry, tmp_path / "models", "1.0.0")
    Deployments(store, registry).set_traffic("iris", {"1.0.0": 100}, actor="test")
    gw = Gateway(store, blobs, GatewaySettings(flush_interval_s=3600))
    with serve(gw.app) as url:
        yield gw, url, db
    store.dispose()


def test_telemetry_recorded_during_a_store_outage_is_written_when_it_returns(
    gateway: tuple[Gateway, str, Path],
) -> None:
    gw, url, db = gateway
    os.rename(db, db.with_name("away.db"))
    body = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    for _ in range(20):
        assert httpx.post(f"{url}/models/iris/predict", json=body).status_code == 200
    with pytest.raises(StoreUnavailable):
        gw.flush()
    os.rename(db.with_name("away.db"), db)
    gw.flush()
    batches = read_batches(gw.store, "iris")["1.0.0"]
    assert sum(b.requests for b in batches) == 20
