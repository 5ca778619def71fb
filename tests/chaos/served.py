"""Real ``backout serve`` processes, a bounded load on 127.0.0.1 and the CLI, for the chaos
tests: each fault is injected into processes these helpers started, and ended by their id."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.postgres_server import free_port
from tests.waits import wait_for

ROW = [5.1, 3.5, 1.4, 0.2]
FAILED = 0  # the code counted for a request that got no HTTP answer (connection error)


class Served:
    """``backout serve`` on 127.0.0.1 in its own session: the supervisor runs the
    controller, its worker processes answer requests."""

    def __init__(
        self, store_url: str, artifacts: Path, log: Path, *, workers: int = 2,
        controller: bool = True, admin_port: int | None = None,
    ) -> None:  # fmt: skip
        self.store_url, self.artifacts, self.log = store_url, artifacts, log
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "BACKOUT_STORE": store_url, "BACKOUT_ARTIFACTS": str(artifacts)}
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "backout", "serve", "--host", "127.0.0.1",
                 "--port", self.url.rsplit(":", 1)[1], "--workers", str(workers),
                 "--no-access-log", "--controller" if controller else "--no-controller",
                 *(["--admin-port", str(admin_port)] if admin_port else [])],
                env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
            )  # fmt: skip
        wait_for(self._ready, 60, f"backout serve on {self.url}", interval=0.2, detail=self.tail)

    @property
    def holder(self) -> str:
        """The controller lease holder this process's controller uses."""
        return f"{os.uname().nodename}:{self.proc.pid}"

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"backout serve exited {self.proc.returncode}:\n{self.tail()}")
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def states(self, n: int = 40) -> dict[int, dict[str, Any]]:
        """worker pid -> its ``/backout/state``, asked over ``n`` fresh connections."""
        seen: dict[int, dict[str, Any]] = {}
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, timeout=5, limits=limits) as client:
            for _ in range(n):
                try:
                    state = client.get("/backout/state").json()
                except httpx.HTTPError:
                    continue  # a worker that is not there (yet) is asked again later
                seen[int(state["worker"].rsplit(":", 1)[1])] = state
        return seen

    def wait_workers(self, n: int, *, gone: int | None = None) -> dict[int, dict[str, Any]]:
        """The states of ``n`` answering workers, none of them ``gone``, once there are."""

        def seen() -> dict[int, dict[str, Any]] | None:
            states = self.states()
            return states if len(states) == n and gone not in states else None

        return wait_for(seen, 30, f"{n} workers answering", interval=0.2, detail=self.tail)

    def kill_supervisor(self) -> None:
        """kill -9 the supervisor process, and with it the controller thread it runs."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM to this process's session (workers orphaned by a kill included), then -9."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(15)
        deadline = time.monotonic() + 10
        while _group_alive(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(self.proc.pid):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Load:
    """A bounded load: ``callers`` threads posting predictions with routing keys over fresh
    connections (so every worker answers), for at most ``seconds``; codes counts the
    answers by status, ``FAILED`` for a request that got no answer."""

    def __init__(self, url: str, *, callers: int = 4, seconds: float = 60.0) -> None:
        self.url, self.seconds = url, seconds
        self.codes: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()  # exception class -> count
        self.latencies: list[float] = []  # seconds, of every answered request
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._call, args=(i,), daemon=True) for i in range(callers)
        ]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    @property
    def sent(self) -> int:
        return sum(self.codes.values())

    def _call(self, caller: int) -> None:
        deadline = time.monotonic() + self.seconds
        limits = httpx.Limits(max_keepalive_connections=0)
        n = 0
        with httpx.Client(base_url=self.url, timeout=10, limits=limits) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                n += 1
                key = {"x-backout-key": f"caller-{caller}-{n % 50}"}
                began = time.monotonic()
                try:
                    response = client.post(
                        "/models/iris/predict", json={"instances": [ROW]}, headers=key
                    )
                    self.codes[response.status_code] += 1
                    self.latencies.append(time.monotonic() - began)
                except httpx.HTTPError as exc:
                    self.codes[FAILED] += 1
                    self.failures[type(exc).__name__] += 1
                time.sleep(0.01)


def backout(
    store_url: str, artifacts: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the CLI on this store in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "backout", "--store", store_url, "--artifacts", str(artifacts),
         *args],
        capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> bool:
    """A failure told in one line on stderr, not a traceback."""
    return result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
