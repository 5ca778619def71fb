"""A staged rollback through real ``backout serve`` processes under load: the controller
killed with -9 in the middle of it, and webhooks that hang or answer 500."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from backout.control.operations import Operation, Operations
from backout.store import audit, open_store, schema
from tests.chaos.conftest import Site
from tests.chaos.served import FAILED, Load
from tests.control.webhook_receiver import Receiver
from tests.postgres_server import free_port
from tests.waits import wait_for

POLICY = """
rollout: {steps: [90, 100], bake: 10m, min_requests: 20}
rollback:
  mode: staged
  steps: [40, 70, 100]
  bake: 2s
  gate: {judges: [{judge: integrity}]}
  verification: {duration: 3s, min_requests: 20}
completion: {rollout: 10m, rollback: 3s}
triggers: []
# The replay still runs; its latency bound is wide because this machine is shared and loaded,
# and the faults under test are elsewhere.
replay: {max_latency_ratio: 1000}
notifications: {webhooks: [WEBHOOKS], on: [phase, abort, trigger, freeze, completed]}
"""
# Where a rollback is, in the only order it may move: its step, then verifying, then done.
RANK = {"rolling-back": 0, "verifying": 100, "rolled-back": 200}


def _start_rollback(site: Site, webhooks: list[str]) -> int:
    """iris@1.1.0 rolling out at 90% under POLICY, then a staged rollback to 1.0.0; its id."""
    policy = site.tmp / "policy.yaml"
    policy.write_text(POLICY.replace("WEBHOOKS", ", ".join(webhooks)))
    deployed = site.cli("deploy", "iris@1.1.0", "--policy", str(policy))
    assert deployed.returncode == 0, deployed.stderr
    time.sleep(1.0)  # some traffic on both releases for the replay and the gate
    rolled = site.cli("rollback", "iris", "--staged", "--reason", "chaos")
    assert rolled.returncode == 0, rolled.stderr
    op = _operations(site)[0]
    assert op.kind == "rollback" and op.phase == "rolling-back", op
    return op.id


def _operations(site: Site) -> list[Operation]:
    store = open_store(site.store_url)
    try:
        return Operations(store).recent("iris")
    finally:
        store.dispose()


@contextmanager
def _watch(site: Site, op_id: int) -> Iterator[list[tuple[str, int]]]:
    """(phase, step) of the operation as the store says, sampled every 50 ms."""
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def watch() -> None:
        store = open_store(site.store_url)
        ops = Operations(store)
        try:
            while not stop.wait(0.05):
                op = ops.get(op_id)
                if op is not None and (not seen or seen[-1] != (op.phase.value, op.step)):
                    seen.append((op.phase.value, op.step))
        finally:
            store.dispose()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(10)


def _ended(site: Site, op_id: int) -> Operation | None:
    op = next(o for o in _operations(site) if o.id == op_id)
    return op if op.ended_at is not None else None


def _chain_problems(site: Site) -> list[audit.ChainProblem]:
    store = open_store(site.store_url)
    try:
        with store.read() as conn:
            return audit.verify_chain(conn)
    finally:
        store.dispose()


def _events(site: Site, *kinds: str) -> list[audit.Event]:
    store = open_store(site.store_url)
    try:
        with store.read() as conn:
            return audit.list_events(conn, "iris", kinds=kinds)
    finally:
        store.dispose()


def _lease_holder(site: Site) -> str | None:
    store = open_store(site.store_url)
    try:
        with store.read() as conn:
            return conn.execute(sa.select(schema.leases.c.holder)).scalar()
    finally:
        store.dispose()


def _forward_only(seen: list[tuple[str, int]]) -> bool:
    ranks = [RANK[phase] + step for phase, step in seen]
    return ranks == sorted(ranks)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_controller_killed_mid_rollback_is_resumed_by_the_next_and_nothing_is_lost(
    site: Site,
) -> None:
    first = site.serve(workers=1)
    wait_for(lambda: _lease_holder(site) == first.holder, 20, "the first controller's lease")
    second = site.serve(workers=1)
    with Load(second.url, callers=4, seconds=90) as load:
        op_id = _start_rollback(site, [])
        with _watch(site, op_id) as seen:
            time.sleep(0.5)
            first.kill_supervisor()  # kill -9 of the controller holding the lease
            # Nothing moves until the lease runs out; status says where the rollback stands.
            during = site.cli("status", "iris")
            ended = wait_for(lambda: _ended(site, op_id), 60, f"operation {op_id} to end",
                             interval=0.2, detail=lambda: f"{seen}\n{second.tail()}")  # fmt: skip
    print(f"sent {load.sent}, failed {load.sent - load.codes[200]}; phases {seen}")
    assert ended.phase == "rolled-back", (ended, seen)
    lines = [line for line in during.stdout.splitlines() if line.startswith("rollback ")]
    assert during.returncode == 0 and len(lines) == 1, during.stdout
    # (which step depends on how far the killed controller got: the line says where it stands)
    assert re.match(r"rollback 1\.1\.0 → 1\.0\.0: rolling-back, step [123] of 3", lines[0]), lines
    assert _lease_holder(site) == second.holder
    assert _forward_only(seen), seen
    assert _chain_problems(site) == []
    kinds = [e.kind for e in _events(site)]
    assert kinds.count("rollback.started") <= 1, kinds  # resumed, not started again
    assert load.codes[200] > 100 and set(load.codes) == {200}, load.codes
    assert FAILED not in load.codes
    assert "Traceback" not in second.tail()


def _address(receiver: Receiver) -> str:
    """host:port, which the redacted URL in an event still shows."""
    return receiver.url.split("/")[2]


@pytest.fixture
def webhooks() -> Iterator[tuple[Receiver, Receiver]]:
    """A webhook endpoint that hangs, and one that answers 500, on 127.0.0.1."""
    hanging, failing = Receiver(hang=True), Receiver(statuses=[500] * 1000)
    try:
        yield hanging, failing
    finally:
        hanging.stop()
        failing.stop()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_hanging_and_failing_webhooks_do_not_hold_a_rollback_and_are_recorded_as_events(
    site: Site, webhooks: tuple[Receiver, Receiver]
) -> None:
    hanging, failing = webhooks
    served = site.serve(workers=1)
    with Load(served.url, callers=4, seconds=90) as load:
        op_id = _start_rollback(site, [hanging.url, failing.url])
        with _watch(site, op_id) as seen:
            # Each notice to the hanging endpoint takes its attempts times its timeout; a
            # rollback that waited for them would still be on its steps when this gives up.
            ended = wait_for(lambda: _ended(site, op_id), 30, f"operation {op_id} to end",
                             interval=0.2, detail=lambda: f"{seen}\n{served.tail()}")  # fmt: skip

        def recorded() -> dict[str, list[str]] | None:
            """Each endpoint's failed attempts, as the outbox keeps them for its retries."""
            by_port: dict[str, list[str]] = {_address(r): [] for r in (hanging, failing)}
            store = open_store(site.store_url)
            try:
                with store.read() as conn:
                    rows = conn.execute(
                        sa.select(schema.outbox.c.target, schema.outbox.c.last_error).where(
                            schema.outbox.c.attempts >= 1, schema.outbox.c.last_error != ""
                        )
                    ).all()
            finally:
                store.dispose()
            for target, error in rows:
                for port, found in by_port.items():
                    if port in target:
                        found.append(error)
            return by_port if all(by_port.values()) else None

        # Failed deliveries are kept in the outbox with their error and retried with backoff
        # (a notice that fails for good becomes a notify.failed event after its last attempt).
        failed = wait_for(recorded, 60, "a failed delivery attempt recorded for each webhook",
                          interval=0.5, detail=served.tail)  # fmt: skip
    print(f"sent {load.sent}, failed {load.sent - load.codes[200]}; phases {seen}")
    for errors in failed.values():
        print(errors[0])
    assert ended.phase == "rolled-back", (ended, seen)
    assert _forward_only(seen), seen
    assert hanging.bodies and failing.bodies  # both were called
    assert ended.ended_at is not None
    assert "SECRET" not in " ".join(e for es in failed.values() for e in es)
    assert _chain_problems(site) == []
    assert load.codes[200] > 100 and set(load.codes) == {200}, load.codes


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_status_says_in_one_line_that_the_last_rollback_ended(site: Site) -> None:
    served = site.serve(workers=1)
    with Load(served.url, callers=2, seconds=60):
        op_id = _start_rollback(site, [])
        wait_for(lambda: _ended(site, op_id), 40, f"operation {op_id} to end", interval=0.2,
                 detail=served.tail)  # fmt: skip
    status = site.cli("status", "iris")
    assert status.returncode == 0, status.stderr
    lines = [line for line in status.stdout.splitlines() if "rolled-back" in line]
    assert len(lines) == 1 and "1.0.0" in lines[0], status.stdout


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_notice_of_a_rollback_started_from_the_command_line_is_retried_until_delivered(
    site: Site,
) -> None:
    """No ``backout serve`` runs: the command delivers what it queued before it exits."""
    receiver = Receiver()
    try:
        policy = site.tmp / "policy.yaml"
        policy.write_text(POLICY.replace("WEBHOOKS", receiver.url))
        assert site.cli("deploy", "iris@1.1.0", "--policy", str(policy)).returncode == 0
        # The rollback queues two notices (the rollout aborted, the rollback started); each
        # gets a 500 twice, then 200: the third attempt of each is delivered.
        receiver.statuses = [500] * 4
        rolled = site.cli("rollback", "iris", "--emergency", "--reason", "chaos")
        assert rolled.returncode == 0 and rolled.stderr == "", rolled.stderr
        started = [b for b in receiver.bodies if "rollback of iris to 1.0.0 started" in str(b)]
        assert len(started) >= 3, receiver.bodies
        assert len({b["backout"]["id"] for b in started}) == 1  # one notice, tried again
    finally:
        receiver.stop()
    status = site.cli("status", "iris", "--json")
    assert status.returncode == 0, status.stderr
    assert '"pending": 0' in status.stdout, status.stdout


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_command_does_not_wait_for_a_dead_receiver_and_status_shows_the_notice(
    site: Site,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hooks/T0/SECRETtoken"  # nothing listens there
    policy = site.tmp / "policy.yaml"
    policy.write_text(POLICY.replace("WEBHOOKS", dead))
    began = time.monotonic()
    deployed = site.cli("deploy", "iris@1.1.0", "--policy", str(policy))
    took = time.monotonic() - began
    assert deployed.returncode == 0 and deployed.stderr == "", deployed.stderr
    status = site.cli("status", "iris")
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if "not delivered yet" in x)
    assert "after 1 attempt: connection failed" in line and "SECRETtoken" not in line, line
    print(f"deploy with a dead webhook took {took:.1f} s; status: {line}")
