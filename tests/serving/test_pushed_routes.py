"""A route change on PostgreSQL carries the new live state in its notification.

A replica applies the state it was sent without reading the store (its reads are counted;
the safety-net poll is set far beyond the test's wait, so nothing else could have told it),
and reads the store instead when the notification does not carry one it can use: the state
was too large for a notification (the bare generation is sent), or the payload is malformed.
A late notification of an older state never takes a replica back. A warm-up notice has a
replica load a release before the route change that moves traffic to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.serving.app import Gateway, GatewaySettings
from backout.store import (
    NOTIFY_PAYLOAD_LIMIT,
    ROUTES_CHANNEL,
    Store,
    open_store,
    routes_payload,
    set_routes_payload,
)
from backout.traffic.deployments import Deployments, LiveState
from backout.traffic.livestate import announce_warm, decode, encode, read_live_state
from tests.loopback import serve
from tests.models import register_iris
from tests.waits import wait_for

pytestmark = pytest.mark.databases("postgresql")

BODY = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
SETTINGS = GatewaySettings(recheck_s=3600.0, flush_interval_s=3600.0)


@contextmanager
def _replica(store: Store, tmp_path: Path) -> Iterator[tuple[Gateway, str, Deployments, list[int]]]:
    """One gateway with a store connection of its own, and a count of its state reads."""
    blobs = LocalBlobStore(tmp_path / "artifacts")
    registry = Registry(store, blobs)
    for version in ("1.0.0", "1.1.0"):
        register_iris(registry, tmp_path / "models", version)
    deployments = Deployments(store, registry)
    deployments.set_traffic("iris", {"1.0.0": 100}, actor="test")
    own = open_store(store.url.render_as_string(False), migrate=False)
    gw = Gateway(own, blobs, SETTINGS)
    reads = [0]
    real = gw.deployments.live_state

    def counted() -> LiveState:
        reads[0] += 1
        return real()

    gw.deployments.live_state = counted  # type: ignore[method-assign]
    try:
        with serve(gw.app) as base:
            reads[0] = 0  # the start-up read does not count
            yield gw, base, deployments, reads
    finally:
        own.dispose()


@contextmanager
def _listening(store: Store) -> Iterator[Callable[[], list[str]]]:
    """The payloads of the route-change notifications sent while the block runs."""
    url = store.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {ROUTES_CHANNEL}")
        yield lambda: [n.payload for n in conn.notifies(timeout=0.5, stop_after=1)]


def _released(base: str) -> str:
    r = httpx.post(f"{base}/models/iris/predict", json=BODY, timeout=10)
    assert r.status_code == 200, r.text
    return r.headers["x-backout-release"]


def _stored(store: Store) -> LiveState:
    with store.read() as conn:
        return read_live_state(conn)


def _on(gw: Gateway, generation: int) -> None:
    wait_for(
        lambda: gw.live.generation == generation, 10, f"the replica on generation {generation}"
    )


def test_a_replica_applies_the_state_a_notification_carries_without_reading(
    store: Store, tmp_path: Path
) -> None:
    with _replica(store, tmp_path) as (gw, base, deployments, reads), _listening(store) as heard:
        assert _released(base) == "iris@1.0.0"
        deployments.set_traffic("iris", {"1.0.0": 50, "1.1.0": 50}, pins={"k": "1.1.0"},
                                actor="test")  # fmt: skip
        [payload] = heard()
        stored = _stored(store)
        assert decode(payload) == stored  # the whole state, as a read would give it
        _on(gw, stored.generation)
        assert gw.live == stored and reads == [0]
        r = httpx.post(f"{base}/models/iris/predict", json=BODY, headers={"x-backout-key": "k"})
        assert r.headers["x-backout-release"] == "iris@1.1.0"
        deployments.set_traffic("iris", {"1.1.0": 100}, actor="test")
        _on(gw, _stored(store).generation)
        assert _released(base) == "iris@1.1.0" and reads == [0]


def test_a_state_too_large_to_notify_is_announced_by_generation_and_read(
    store: Store, tmp_path: Path
) -> None:
    pins = {f"customer-{i:05d}": "1.1.0" for i in range(400)}  # about 10 kB of pins
    with _replica(store, tmp_path) as (gw, base, deployments, reads), _listening(store) as heard:
        table = deployments.set_traffic("iris", {"1.0.0": 100}, pins=pins, actor="test")
        assert len(encode(_stored(store)).encode()) > NOTIFY_PAYLOAD_LIMIT
        assert heard() == [str(_stored(store).generation)]
        _on(gw, _stored(store).generation)
        assert reads == [1] and gw.live.tables["iris"].pins == table.pins
        deployments.set_traffic("iris", {"1.1.0": 100}, pins={}, actor="test")  # fits again
        _on(gw, _stored(store).generation)
        assert reads == [1] and _released(base) == "iris@1.1.0"


def _malformed(conn: Connection, generation: int) -> list[str]:
    good = orjson.loads(encode(read_live_state(conn)))
    half = [{**good["tables"][0], "ranges": {"1.1.0": [[0, 5000]]}}]
    return [
        "{not json",
        orjson.dumps({"v": 1, "generation": generation}).decode(),
        orjson.dumps({**good, "v": 2}).decode(),
        orjson.dumps({**good, "tables": half}).decode(),
    ]


def test_a_replica_reads_the_store_when_a_notification_is_malformed(
    store: Store, tmp_path: Path
) -> None:
    builder = routes_payload()
    with _replica(store, tmp_path) as (gw, base, deployments, reads):
        with store.read() as conn:
            kinds = len(_malformed(conn, 0))
        try:
            for i in range(kinds):

                def bad(conn: Connection, generation: int, i: int = i) -> str:
                    return _malformed(conn, generation)[i]

                set_routes_payload(bad)
                target = ("1.1.0", "1.0.0")[i % 2]
                deployments.set_traffic("iris", {target: 100}, actor="test")
                _on(gw, _stored(store).generation)
                assert reads == [i + 1] and _released(base) == f"iris@{target}"
        finally:
            set_routes_payload(builder)


def test_a_late_notification_of_an_older_state_never_takes_a_replica_back(
    store: Store, tmp_path: Path
) -> None:
    with _replica(store, tmp_path) as (gw, base, deployments, reads), _listening(store) as heard:
        deployments.set_traffic("iris", {"1.1.0": 100}, actor="test")
        [older] = heard()
        deployments.set_traffic("iris", {"1.0.0": 100}, actor="test")
        newest = _stored(store).generation
        _on(gw, newest)
        switches = len(gw.switches)
        with store.engine.begin() as conn:  # the older state's notification, sent again
            conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": ROUTES_CHANNEL, "p": older})
        heard()
        time.sleep(0.3)  # many polls
        assert gw.live.generation == newest and len(gw.switches) == switches
        assert _released(base) == "iris@1.0.0" and reads == [0]


def test_a_warm_up_notice_loads_a_release_before_the_route_change_that_moves_to_it(
    store: Store, tmp_path: Path
) -> None:
    with _replica(store, tmp_path) as (gw, base, deployments, reads):
        register_iris(deployments.registry, tmp_path / "models", "1.2.0", c=0.9)
        loads: list[tuple[str, str]] = []
        real = gw.pool.load_sync

        def counted(key: tuple[str, str]) -> Any:
            loads.append(key)
            return real(key)

        gw.pool.load_sync = counted  # type: ignore[method-assign]
        announce_warm(store, [("iris", "1.2.0")])
        wait_for(lambda: ("iris", "1.2.0") in gw.pool.entries, 20, "the release warmed up")
        generation = gw.live.generation
        assert reads == [0] and gw.live.generation == generation  # no route change yet
        deployments.set_traffic("iris", {"1.0.0": 50, "1.1.0": 50}, actor="test")
        _on(gw, _stored(store).generation)  # another change keeps the warmed release
        assert ("iris", "1.2.0") in gw.pool.entries
        deployments.set_traffic("iris", {"1.2.0": 100}, actor="test")
        _on(gw, _stored(store).generation)
        assert _released(base) == "iris@1.2.0"
        assert loads.count(("iris", "1.2.0")) == 1 and reads == [0]  # loaded once, ahead
