"""End to end: a real ``backout serve`` recovers from a latency fault by itself, failing nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from backout.control.controller import Controller
from backout.control.drills import run_drill
from backout.control.policy import parse_policy
from backout.registry.releases import Registry
from backout.store import Store
from backout.traffic.faults import parse_fault
from tests.loopback import free_port
from tests.models import register_iris
from tests.waits import wait_for

pytestmark = pytest.mark.databases("sqlite")  # `backout serve` in subprocesses: slow enough once

POLICY = """
rollback:
  mode: staged
  verification: {duration: 1s, min_requests: 10}
triggers:
  - {name: p99, kind: latency, quantile: 0.99, max_ms: 150, window: 2s, min_requests: 20, mode: emergency}
"""
BODY = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


@dataclass(frozen=True, slots=True)
class Answer:
    sent: float  # time.monotonic() when the request went out
    status: int  # 0: no HTTP answer at all
    release: str
    worker: str


@pytest.fixture
def world(store: Store, registry: Registry, tmp_path: Path) -> tuple[Store, Registry]:
    """A tiny store: iris@1.0.0 and iris@1.1.0, both known-good, 1.1.0 live."""
    for version, c in (("1.0.0", 1.0), ("1.1.0", 0.5)):
        register_iris(registry, tmp_path / "models", version, c=c)
        registry.mark_good(f"iris@{version}", actor="test", reason="a rollback point")
    ctl = Controller(store, registry, actor="test")
    ctl.set_policy("iris", parse_policy(POLICY), source="test", actor="test")
    ctl.deployments.set_traffic("iris", {"1.1.0": 100}, actor="test")
    return store, registry


@pytest.fixture
def gateway(tmp_path: Path, store_url: str, world: tuple[Store, Registry]) -> Iterator[str]:
    """``python -m backout serve`` (2 workers and the controller) on a free loopback port."""
    port = free_port()
    env = {
        **os.environ,
        "BACKOUT_STORE": store_url,
        "BACKOUT_ARTIFACTS": str(tmp_path / "artifacts"),
    }
    log = tmp_path / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backout", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "2", "--no-access-log"],
            env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def started() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"backout serve exited:\n{log.read_text()[-2000:]}")
        return _ready(url)

    try:
        wait_for(started, 30, f"backout serve to be ready at {url}", interval=0.2,
                 detail=lambda: log.read_text()[-2000:])  # fmt: skip
        yield url
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


def _drive(url: str, stop: threading.Event, answers: list[Answer]) -> None:
    """One caller in a loop, a new routing key per request, recording every outcome.

    No keep-alive: each request opens its own connection, so the kernel spreads them over
    both workers and each worker's switch shows in the answers.
    """
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=url, timeout=10, limits=limits) as client:
        n = 0
        while not stop.is_set():
            n += 1
            sent = time.monotonic()
            try:
                r = client.post("/models/iris/predict", json=BODY,
                                headers={"x-backout-key": f"{threading.get_ident()}-{n}"})  # fmt: skip
            except httpx.HTTPError:
                answers.append(Answer(sent, 0, "", ""))
                continue
            answers.append(Answer(sent, r.status_code, r.headers.get("x-backout-release", ""),
                                  r.headers.get("x-backout-worker", "")))  # fmt: skip
            time.sleep(0.01)  # about 60 requests/s per caller when healthy


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_latency_fault_rolls_back_in_emergency_with_no_failed_request(
    world: tuple[Store, Registry], gateway: str
) -> None:
    store, registry = world
    stop = threading.Event()
    answers: list[Answer] = []
    callers = [
        threading.Thread(target=_drive, args=(gateway, stop, answers), daemon=True)
        for _ in range(8)
    ]
    for t in callers:
        t.start()
    try:
        time.sleep(2.5)  # a healthy window first: the trigger must not fire on it
        assert Controller(store, registry).active("iris") is None
        drill = run_drill(
            store, registry, "iris", parse_fault("latency=+300ms"), actor="test", timeout=25
        )
        finished = time.monotonic()
        time.sleep(1.0)  # traffic after the rollback completed: all of it must be on 1.0.0
    finally:
        stop.set()
        for t in callers:
            t.join(15)

    assert drill.release == "1.1.0"
    assert drill.outcome == "rolled-back", drill.to_dict()
    assert drill.target == "1.0.0"
    op = Controller(store, registry).operations("iris", limit=1)[0]
    assert op.kind == "rollback" and op.state.mode == "emergency"
    assert Controller(store, registry).deployments.require("iris").weights == {"1.0.0": 10_000}
    late = [a for a in answers if a.sent > finished]
    assert late, "no traffic after the rollback"
    assert {a.release for a in late} == {"iris@1.0.0"}
    assert len({a.worker for a in late}) == 2, "both workers must answer after the rollback"
    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:3]}"
