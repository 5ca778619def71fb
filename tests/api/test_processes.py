"""The control API's processes: ``backout serve --admin-port`` starts it in a process of its
own beside the gateway, which exits when serve is killed; ``backout api`` runs it alone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from backout.api import tokens
from backout.api.roles import make_grant
from backout.store import open_store
from tests.postgres_server import free_port
from tests.waits import wait_for

pytestmark = [pytest.mark.databases("sqlite"), pytest.mark.slow]


def _env(tmp_path: Path) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "BACKOUT_STORE": f"sqlite:///{tmp_path / 'store.db'}",
            "BACKOUT_ARTIFACTS": str(tmp_path / "artifacts"),
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}  # fmt: skip


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def test_serve_runs_the_api_in_its_own_process_which_dies_with_it(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", create=True)
    token = tokens.create(store, [make_grant("viewer", ["*"])], actor="setup", name="vic").token
    store.dispose()
    port, admin = free_port(), free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backout", "serve", "--port", str(port), "--workers", "1",
             "--no-access-log", "--no-controller", "--admin-port", str(admin)],
            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip
    api = f"http://127.0.0.1:{admin}/api/v1"
    try:
        wait_for(lambda: _answers(f"{api}/whoami"), 90, f"the control API on {admin}: {log}")
        assert httpx.get(f"{api}/whoami").status_code == 401
        me = httpx.get(f"{api}/whoami", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["name"] == "vic"
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/v2/health/live"), 90, "the gateway")
        children = [p for p in psutil.Process(proc.pid).children(recursive=True)
                    if "api" in p.cmdline() and "--port" in p.cmdline()]  # fmt: skip
        assert len(children) == 1, [p.cmdline() for p in children]
        api_proc = children[0]
        assert api_proc.pid != proc.pid
        # Killed without a chance to stop it: the API notices and exits on its own.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not api_proc.is_running() or api_proc.status() == psutil.STATUS_ZOMBIE, 30,
                 "the API process to exit after serve was killed")  # fmt: skip
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the API too, should it still run
        proc.wait(5)
