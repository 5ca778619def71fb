"""A real gateway on 127.0.0.1 keeps serving while its SQLite store is moved away, and comes
back to the store's newest generation by itself; each fault is one log line, not one per poll."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backout.control.controller import Controller
from backout.registry.artifacts import LocalBlobStore
from backout.registry.releases import Registry
from backout.store import open_store, read_generation
from tests.models import register_iris
from tests.postgres_server import free_port

BODY = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """``backout serve`` (2 workers and the controller) on iris@1.0.0; (url, store file, log)."""
    db = tmp_path / "store.db"
    store = open_store(f"sqlite:///{db}", create=True)
    registry = Registry(store, LocalBlobStore(tmp_path / "artifacts"))
    for version in ("1.0.0", "1.1.0"):
        register_iris(registry, tmp_path / "models", version)
    Controller(store, registry, actor="test").deploy("iris", "1.0.0", actor="test")
    store.dispose()
    port = free_port()
    env = {**os.environ, "BACKOUT_STORE": f"sqlite:///{db}",
           "BACKOUT_ARTIFACTS": str(tmp_path / "artifacts")}  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backout", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "2", "--no-access-log"],
            env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"backout serve did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url, db, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _drive(url: str, stop: threading.Event, codes: Counter[int]) -> None:
    limits = httpx.Limits(max_keepalive_connections=0)  # new connections: both workers answer
    with httpx.Client(base_url=url, timeout=10, limits=limits) as client:
        while not stop.is_set():
            try:
                codes[client.post("/models/iris/predict", json=BODY).status_code] += 1
            except httpx.HTTPError:
                codes[0] += 1
            time.sleep(0.01)


def _generations(url: str, n: int = 40) -> dict[str, int]:
    """worker -> routes generation it serves, asked over fresh connections."""
    seen: dict[str, int] = {}
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=url, timeout=5, limits=limits) as client:
        for _ in range(n):
            state = client.get("/backout/state").json()
            seen[state["worker"]] = state["generation"]
    return seen


def _backout(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backout", "--store", f"sqlite:///{db}",
         "--artifacts", str(db.parent / "artifacts"), *args],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_store_moved_away_fails_no_request_and_every_worker_recovers_by_itself(
    served: tuple[str, Path, Path],
) -> None:
    url, db, log = served
    stop = threading.Event()
    codes: Counter[int] = Counter()
    callers = [threading.Thread(target=_drive, args=(url, stop, codes)) for _ in range(4)]
    for t in callers:
        t.start()
    try:
        time.sleep(1.0)
        os.rename(db, db.with_name("away.db"))
        # The read command that used to create an empty store in its place.
        status = _backout(db, "status")
        assert status.returncode != 0 and status.stderr.count("\n") == 1
        assert "backout init" in status.stderr and not db.exists()
        time.sleep(6.0)  # an outage of several route polls, telemetry flushes and ticks
        os.rename(db.with_name("away.db"), db)
        time.sleep(2.0)
        moved = _backout(db, "traffic", "iris", "1.0.0=50", "1.1.0=50")
        assert moved.returncode == 0, moved.stderr
        store = open_store(f"sqlite:///{db}")
        with store.read() as conn:
            wanted = read_generation(conn)
        store.dispose()
        deadline = time.monotonic() + 10
        seen = _generations(url)
        while len(seen) < 2 or set(seen.values()) != {wanted}:
            assert time.monotonic() < deadline, f"workers {seen}, store at {wanted}"
            time.sleep(0.2)
            seen = _generations(url)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in callers:
            t.join(15)
    assert codes[200] > 100 and set(codes) == {200}, codes  # not one 404, 503 or failure
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    starts = [line for line in text.splitlines() if "failed:" in line]
    ends = [line for line in text.splitlines() if "recovered after" in line]
    # Per worker at most one line per fault for the route poll and the telemetry flush, one
    # for the controller's loop and one for the outbox's: a handful, not one per poll.
    assert 1 <= len(starts) <= 6 and len(ends) == len(starts), text[-3000:]
