"""PostgreSQL stopped for a few seconds and started again under load: no request fails
(the gateway serves what it has), and the gateway and the controller come back by
themselves."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from backout.store import open_store, read_generation, schema
from tests.chaos.conftest import Site, make_site
from tests.chaos.served import FAILED, Load
from tests.postgres_server import PostgresServer
from tests.waits import wait_for

OUTAGE_S = 5.0


@pytest.fixture
def pg_site(tmp_path: Path) -> Iterator[tuple[Site, PostgresServer]]:
    """A site on a PostgreSQL server of this test's own, which it may stop and start."""
    server = PostgresServer().start()
    try:
        with make_site(server.create_database(), tmp_path) as site:
            yield site, server
    finally:
        server.stop()


def _lease(site: Site) -> tuple[str, float] | None:
    store = open_store(site.store_url)
    try:
        with store.read() as conn:
            row = conn.execute(
                sa.select(schema.leases.c.holder, schema.leases.c.expires_at)
            ).first()
            return (str(row[0]), float(row[1])) if row else None
    finally:
        store.dispose()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(150)
def test_postgres_stopped_and_started_fails_no_request_and_everything_resumes(
    pg_site: tuple[Site, PostgresServer],
) -> None:
    site, server = pg_site
    served = site.serve(workers=2)
    served.wait_workers(2)
    with Load(served.url, callers=4, seconds=60) as load:
        time.sleep(1.0)
        server.halt()
        time.sleep(OUTAGE_S)  # route polls, telemetry flushes and controller ticks all fail
        during = load.sent
        server.resume()
        before = wait_for(lambda: _lease(site), 30, "the store to answer again", interval=0.2)
        # The controller is back: it renews its lease on its own.
        wait_for(lambda: (now := _lease(site)) and now[1] > before[1] and now, 20,
                 "the controller to renew its lease", interval=0.2, detail=served.tail)  # fmt: skip
        moved = site.cli("traffic", "iris", "1.0.0=70", "1.1.0=30")
        assert moved.returncode == 0, moved.stderr
        store = open_store(site.store_url)
        with store.read() as conn:
            wanted = read_generation(conn)
        store.dispose()

        def current() -> bool:
            states = served.states()
            return len(states) == 2 and {s["generation"] for s in states.values()} == {wanted}

        wait_for(current, 20, f"both workers on generation {wanted}", interval=0.2,
                 detail=served.tail)  # fmt: skip
        time.sleep(1.0)
    print(f"sent {load.sent} ({during} by the end of the outage), "
          f"failed {load.sent - load.codes[200]} ({dict(load.codes)})")  # fmt: skip
    assert _lease(site) is not None and _lease(site)[0] == served.holder  # type: ignore[index]
    assert load.codes[200] > 100 and set(load.codes) == {200}, load.codes
    assert FAILED not in load.codes
    log = served.tail()
    assert "Traceback" not in log, log
    starts = [line for line in log.splitlines() if "failed:" in line]
    ends = [line for line in log.splitlines() if "recovered after" in line]
    assert 1 <= len(starts) <= 7 and len(ends) == len(starts), log
