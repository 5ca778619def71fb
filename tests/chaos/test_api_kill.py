"""kill -9 of the control API: ``backout serve --admin-port`` runs it in a process of its own,
so the data path does not notice, and starts it again by itself; the one line that says so
is in serve's log."""

from __future__ import annotations

import os
import signal

import httpx
import psutil
import pytest

from tests.chaos.conftest import Site
from tests.chaos.served import FAILED, Load
from tests.postgres_server import free_port
from tests.waits import wait_for


def _api_pid(serve_pid: int) -> int | None:
    """The pid of the ``backout api`` child of ``backout serve``, if one runs."""
    for child in psutil.Process(serve_pid).children():
        try:
            cmd = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "api" in cmd and "backout" in cmd:
            return child.pid
    return None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_killed_api_is_started_again_and_the_data_path_never_notices(site: Site) -> None:
    port = free_port()
    served = site.serve(workers=1, admin_port=port)
    summary = f"http://127.0.0.1:{port}/status/summary.json"  # public: no token needed
    wait_for(lambda: _answers(summary), 60, "the control API", interval=0.2, detail=served.tail)
    first = _api_pid(served.proc.pid)
    assert first is not None, served.tail()
    with Load(served.url, callers=2, seconds=30) as load:
        os.kill(first, signal.SIGKILL)
        again = wait_for(
            lambda: (pid := _api_pid(served.proc.pid)) not in (None, first) and pid,
            30, "the control API started again", interval=0.2, detail=served.tail,
        )  # fmt: skip
        wait_for(lambda: _answers(summary), 60, "the control API answering again", interval=0.2)
    assert load.codes[FAILED] == 0 and set(load.codes) == {200}, (load.codes, load.failures)
    assert load.sent > 0
    lines = [line for line in served.tail().splitlines() if "backout api (pid" in line]
    assert lines == [f"backout api (pid {first}) exited with -9; started again as pid {again}"]
