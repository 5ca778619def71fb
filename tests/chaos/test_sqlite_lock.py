"""The SQLite store file locked by another process (``BEGIN EXCLUSIVE`` held for a few
seconds) while the gateway serves: no request fails, a CLI write waits or fails in one line,
and everything takes the store's newest state by itself once the lock is gone."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from backout.store import open_store, read_generation
from tests.chaos.conftest import Site
from tests.chaos.served import FAILED, Load, one_line
from tests.waits import wait_for

LOCK_S = 5.0
# Holds the write lock for LOCK_S seconds, then gives it back and exits by itself.
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_locked_store_file_fails_no_request_and_everything_recovers_by_itself(
    site: Site,
) -> None:
    served = site.serve(workers=2)
    served.wait_workers(2)
    with Load(served.url, callers=4, seconds=40) as load:
        time.sleep(1.0)
        with subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(site.db), str(LOCK_S)],
            stdout=subprocess.PIPE, text=True,
        ) as locker:  # fmt: skip
            try:
                assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
                status = site.cli("status", "iris")
                write = site.cli("traffic", "iris", "1.0.0=50", "1.1.0=50")
                assert locker.wait(LOCK_S + 30) == 0
            finally:
                if locker.poll() is None:
                    locker.kill()
        print(f"status during the lock: rc {status.returncode} {status.stderr.strip()!r}")
        print(f"write during the lock: rc {write.returncode} {write.stderr.strip()!r}")
        # Either the commands waited for the lock and did their work, or they said in one
        # line why not; never a traceback.
        assert status.returncode == 0 or one_line(status), status.stderr
        assert write.returncode == 0 or one_line(write), write.stderr
        after = site.cli("traffic", "iris", "1.0.0=70", "1.1.0=30")
        assert after.returncode == 0, after.stderr
        store = open_store(site.store_url)
        with store.read() as conn:
            wanted = read_generation(conn)
        store.dispose()

        def current() -> bool:
            states = served.states()
            return len(states) == 2 and {s["generation"] for s in states.values()} == {wanted}

        wait_for(current, 15, f"both workers on generation {wanted}", interval=0.2,
                 detail=served.tail)  # fmt: skip
        time.sleep(1.0)
    print(f"sent {load.sent}, failed {load.sent - load.codes[200]} ({dict(load.codes)})")
    assert load.codes[200] > 100 and set(load.codes) == {200}, load.codes
    assert FAILED not in load.codes
    log = served.tail()
    assert "Traceback" not in log, log
    status = site.cli("status", "iris")
    assert status.returncode == 0, status.stderr
