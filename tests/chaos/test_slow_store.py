"""A slow store: PostgreSQL behind a proxy that holds every answer 0.3 s, for several
seconds, under load. The gateway answers from memory, so no request fails or waits for the
store; the controller keeps its lease and the audit chain; a command is slow but works (or
fails in one line); ``status`` says the store is slow; and once the store is fast again every
worker takes the newest route table by itself."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from backout.store import audit, open_store, read_generation, schema
from tests.chaos.conftest import Site, make_site
from tests.chaos.served import FAILED, Load, backout, one_line
from tests.latency_proxy import LatencyProxy
from tests.postgres_server import PostgresServer
from tests.waits import wait_for

DELAY_S = 0.3  # added to every round trip to the store
SLOW_S = 8.0  # how long the store stays slow, at least
DEADLINE_S = 5.0  # no request may take longer (the load's own timeout is 10 s)


@pytest.fixture
def slow_site(tmp_path: Path) -> Iterator[tuple[Site, LatencyProxy]]:
    """A site whose store is a PostgreSQL server of this test's own, reached through a
    latency proxy (no latency until the test adds some)."""
    server = PostgresServer().start()
    try:
        with (
            LatencyProxy(server.port) as proxy,
            make_site(proxy.url(server.create_database()), tmp_path) as site,
        ):
            yield site, proxy
    finally:
        server.stop()


def _read(site: Site) -> tuple[str | None, int, list[audit.ChainProblem]]:
    """(lease holder, route generation, chain problems) as the store says now."""
    store = open_store(site.store_url)
    try:
        with store.read() as conn:
            holder = conn.execute(sa.select(schema.leases.c.holder)).scalar()
            return holder, read_generation(conn), audit.verify_chain(conn)
    finally:
        store.dispose()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_a_slow_store_fails_no_request_and_status_says_the_store_is_slow(
    slow_site: tuple[Site, LatencyProxy],
) -> None:
    site, proxy = slow_site
    served = site.serve(workers=2)
    served.wait_workers(2)
    wait_for(lambda: _read(site)[0] == served.holder, 20, "the controller to take its lease",
             interval=0.2, detail=served.tail)  # fmt: skip
    with Load(served.url, callers=4, seconds=120) as load:
        time.sleep(1.0)
        proxy.delay = DELAY_S
        began = time.monotonic()
        # A read and a write at once (each makes many round trips, so each takes a while).
        with ThreadPoolExecutor(2) as pool:
            reading = pool.submit(backout, site.store_url, site.artifacts, "status", "iris",
                                  timeout=120)  # fmt: skip
            writing = pool.submit(backout, site.store_url, site.artifacts, "traffic", "iris",
                                  "1.0.0=80", "1.1.0=20", timeout=120)  # fmt: skip
            status, moved = reading.result(), writing.result()
        time.sleep(max(0.0, SLOW_S - (time.monotonic() - began)))
        slow_for = time.monotonic() - began
        proxy.delay = 0.0
        holder, wanted, _ = _read(site)

        def current() -> bool:
            states = served.states()
            return len(states) == 2 and {s["generation"] for s in states.values()} == {wanted}

        wait_for(current, 30, f"both workers on generation {wanted}", interval=0.2,
                 detail=served.tail)  # fmt: skip
        time.sleep(1.0)
    slowest = max(load.latencies)
    print(f"store slow for {slow_for:.1f} s; sent {load.sent}, codes {dict(load.codes)}, "
          f"slowest answer {slowest * 1000:.0f} ms")  # fmt: skip
    print(f"status while slow: rc {status.returncode}: {status.stdout.splitlines()[:1]}")
    print(f"traffic while slow: rc {moved.returncode} {moved.stderr.strip()!r}")
    # The data path: every request answered, none held by the store.
    assert load.codes[200] > 100 and set(load.codes) == {200}, load.codes
    assert FAILED not in load.codes
    assert slowest < DEADLINE_S, slowest
    # The command line: slow, but it works or says why in one line; status names the cause.
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("store slow: one round trip took "), status.stdout
    assert moved.returncode == 0 or one_line(moved), moved.stderr
    # The controller: still the one holder of the lease, the audit chain whole.
    holder, _, problems = _read(site)
    assert holder == served.holder and problems == []
    if moved.returncode == 0:
        doc = json.loads(site.cli("status", "iris", "--json").stdout)
        weights = {r["version"]: r["weight"] for r in doc["releases"]}  # in percent
        assert weights == {"1.0.0": 80, "1.1.0": 20}, weights
    log = served.tail()
    assert "Traceback" not in log, log
    after = site.cli("status", "iris")
    assert after.returncode == 0 and "store slow" not in after.stdout, after.stdout
