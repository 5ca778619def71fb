"""The outbox across real process deaths: a notice committed by a process killed before it
sent anything, or killed while its send was in flight, reaches the webhook receiver (a
real HTTP server on 127.0.0.1) exactly once by id after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backout.control.outbox import Outbox
from backout.store import Store, audit
from tests.control.webhook_receiver import Receiver

SCRIPT = Path(__file__).with_name("outbox_process.py")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def start(mode: str, store_url: str, webhook: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, store_url, webhook],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip


def wait_line(proc: subprocess.Popen[str], expected: str, timeout: float = 60.0) -> None:
    assert proc.stdout is not None
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        raise AssertionError(f"no {expected!r} from {proc.args} within {timeout} s")
    line = proc.stdout.readline().strip()
    if line != expected:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"expected {expected!r}, got {line!r}; stderr: {err[-2000:]}")


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)  # reaps it and closes its pipes
    assert proc.returncode == -signal.SIGKILL


def deliver(store_url: str, webhook: str) -> None:
    proc = start("deliver", store_url, webhook)
    wait_line(proc, "done")
    proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_killed_right_after_the_commit_the_notice_is_sent_after_restart(
    store: Store, store_url: str
) -> None:
    receiver = Receiver()
    try:
        proc = start("enqueue", store_url, receiver.url)
        wait_line(proc, "committed")
        kill(proc)  # between the commit and any send
        assert receiver.deliveries == []
        with store.read() as conn:
            assert [e.kind for e in audit.list_events(conn)] == ["freeze"]
        (item,) = Outbox(store).items("pending")
        deliver(store_url, receiver.url)
    finally:
        receiver.stop()
    assert list(receiver.unique()) == [item["id"]]
    assert len(receiver.deliveries) == 1
    assert receiver.deliveries[0].body["backout"]["title"] == "fraud is frozen"
    assert Outbox(store).items()[0]["status"] == "delivered"


def test_killed_during_the_send_the_receiver_gets_it_once_by_id(
    store: Store, store_url: str
) -> None:
    receiver = Receiver(hang_first=True)
    try:
        proc = start("enqueue", store_url, receiver.url)
        wait_line(proc, "committed")
        kill(proc)
        sender = start("deliver", store_url, receiver.url)
        assert receiver.got.wait(60), "the first delivery never arrived"
        kill(sender)  # the receiver has the notice; the sender died before hearing back
        assert Outbox(store).items()[0]["status"] == "pending"
        deliver(store_url, receiver.url)  # the restart sends it again, with the same id
    finally:
        receiver.stop()
    assert len(receiver.deliveries) == 2
    (only,) = receiver.unique()
    assert only == Outbox(store).items()[0]["id"]
    assert Outbox(store).items()[0]["status"] == "delivered"
