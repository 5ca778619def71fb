"""The processes the scale example starts, and how it stops every one of them.

Each process runs in a process group (a session) of its own, so stopping it stops what it
forked too (uvicorn's workers, for instance): SIGTERM to the group, then SIGKILL to what is
left after a grace period. Every pid the example started, and every descendant seen, is
recorded so that whoever ran the example can check that none survived it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Procs:
    """Every process the example started, in start order."""

    logs: Path
    started: list[Proc] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)  # every pid started or seen as a descendant

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Proc:  # fmt: skip
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, popen, log)
        self.started.append(proc)
        self.seen.add(popen.pid)
        return proc

    def note(self, pid: int) -> None:
        """Record a process started on the example's behalf (PostgreSQL's postmaster)."""
        self.seen.add(pid)

    def note_descendants(self) -> None:
        for proc in self.started:
            with contextlib.suppress(psutil.Error):
                self.seen.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))

    def kill9(self, proc: Proc) -> None:
        """SIGKILL the process and its group, as a host dying would."""
        self.note_descendants()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait(10)

    def stop_all(self, grace: float = 10.0) -> None:
        """Stop every group, newest first: SIGTERM, then SIGKILL after ``grace`` seconds."""
        self.note_descendants()
        for proc in reversed(self.started):
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in reversed(self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group, if anything
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)

    def alive(self) -> list[int]:
        """The recorded pids still running (zombies count as gone)."""
        out = []
        for pid in sorted(self.seen):
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
        return out


def wait_for(what: str, check: Callable[[], Any], *, limit: float, proc: Proc | None = None,
             every: float = 0.1) -> Any:  # fmt: skip
    """Call ``check`` until it returns something truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + limit
    while True:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            got = check()
            if got:
                return got
        except (OSError, httpx.HTTPError, RuntimeError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            tail = f":\n{proc.tail()}" if proc is not None else ""
            raise RuntimeError(f"{what} did not happen within {limit:g} s{tail}")
        time.sleep(every)
