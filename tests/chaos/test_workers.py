"""kill -9 of one gateway worker under load: only the requests in flight on it fail, and
uvicorn's respawned worker serves the store's current route table."""

from __future__ import annotations

import os
import signal
import time

import pytest

from backout.store import open_store, read_generation
from backout.traffic.routes import RouteTable
from tests.chaos.conftest import Site
from tests.chaos.served import FAILED, Load
from tests.waits import wait_for

CALLERS = 4


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_killed_worker_fails_only_its_requests_in_flight_and_is_back_on_the_current_routes(
    site: Site,
) -> None:
    served = site.serve(workers=2)
    assert site.cli("traffic", "iris", "1.0.0=50", "1.1.0=50").returncode == 0
    before = served.wait_workers(2)
    victim = min(before)
    with Load(served.url, callers=CALLERS, seconds=40) as load:
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        served.wait_workers(2, gone=victim)  # uvicorn respawns it
        moved = site.cli("traffic", "iris", "1.0.0=80", "1.1.0=20")
        assert moved.returncode == 0, moved.stderr
        store = open_store(site.store_url)
        with store.read() as conn:
            wanted = read_generation(conn)
        store.dispose()

        def current() -> bool:
            states = served.states()
            return len(states) == 2 and {s["generation"] for s in states.values()} == {wanted}

        wait_for(current, 10, f"both workers on generation {wanted}", interval=0.2,
                 detail=lambda: str({p: s["generation"] for p, s in served.states().items()}))  # fmt: skip
        after = served.states()
        time.sleep(1.0)
    respawned = next(iter(set(after) - set(before)))
    survivor = next(iter(set(after) - {respawned}))
    assert after[respawned]["tables"] == after[survivor]["tables"]
    table = RouteTable.from_dict(after[respawned]["tables"]["iris"])
    assert table.weights == {"1.0.0": 8000, "1.1.0": 2000}
    print(f"sent {load.sent}, failed {load.codes[FAILED]} ({dict(load.failures)})")
    assert load.codes[200] > 100, load.codes
    # A request gets no answer only when it was in flight on the killed worker: one per
    # caller at most. Every answer is a 200 (no 5xx from the survivor or the new worker).
    assert set(load.codes) <= {200, FAILED} and load.codes[FAILED] <= CALLERS, load.codes
    assert "Traceback" not in served.tail()
