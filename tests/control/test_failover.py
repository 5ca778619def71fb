"""Controller failover: two controller processes on one store, the leader killed with
SIGKILL in the middle of a staged rollback; the other takes the lease once it runs out,
with the next fencing generation, and finishes the rollback with every invariant of the
crash tests holding. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backout.control.lease import current
from backout.control.policy import parse_policy
from backout.store import audit
from tests.control.test_controller_crash import (
    LEASE_S,
    MODEL,
    POLICY,
    Site,
    Spawner,
    check_invariants,
    make_site,
)
from tests.waits import wait_for

# Three rollback steps, so the leader dies with the rollback halfway.
STAGED = POLICY.replace(
    "rollback:\n  mode: staged\n  steps: [50, 100]",
    "rollback:\n  mode: staged\n  steps: [34, 67, 100]",
)


@pytest.fixture(scope="module")
def controllers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spawner]:
    s = Spawner(tmp_path_factory.mktemp("failover-logs"))
    try:
        yield s
    finally:
        s.close()


def _events(site: Site) -> list[audit.Event]:
    with site.store.read() as conn:
        return audit.list_events(conn, MODEL)


def _timeline(site: Site) -> str:
    return "\n".join(
        f"  {e.seq:4} {e.actor:<8} {e.kind:<22} {e.reason[:80]}" for e in _events(site)
    )


@pytest.mark.timeout(120)
def test_the_leader_killed_mid_staged_rollback_is_replaced_and_the_rollback_finishes(
    controllers: Spawner, tmp_path: Path, store_url: str
) -> None:
    assert STAGED != POLICY
    site = make_site(tmp_path / "site", store_url)
    site.ops.set_policy(MODEL, parse_policy(STAGED), source="test", actor="test")
    artifacts = tmp_path / "site" / "artifacts"
    procs = []
    try:
        a = controllers.start(site.url, artifacts, site.health_file, "ctl-a", 1)
        procs.append(a)
        wait_for(lambda: (lease := current(site.store)) and lease.holder == "ctl-a", 20,
                 "ctl-a to take the lease")  # fmt: skip
        b = controllers.start(site.url, artifacts, site.health_file, "ctl-b", 2)
        procs.append(b)
        wait_for(lambda: "ctl-b waits" in b.stderr(), 20, "ctl-b to wait for the lease")
        site.command("deploy", version="1.1.0")
        wait_for(lambda: any(e.actor == "ctl-a" for e in _events(site)), 20,
                 "ctl-a to act on the rollout")  # fmt: skip
        site.command("rollback", reason="pager")
        op = site.active()
        assert op is not None and op.kind == "rollback" and op.phase.value == "rolling-back"

        def first_step() -> bool:
            return any(e.kind == "phase.rolling-back" and e.actor == "ctl-a"
                       and e.data.get("event") == "rollback-step-passed" for e in _events(site))  # fmt: skip

        wait_for(
            first_step, 30, "the rollback's first step to pass", detail=lambda: _timeline(site)
        )
        deposed = current(site.store)
        assert deposed is not None and deposed.holder == "ctl-a"
        a.kill()
        died = time.time()
        mid = site.active()
        assert mid is not None and mid.id == op.id and mid.step == 1, mid

        def ended() -> bool:
            now = site.ops.operation(op.id)
            return now.ended_at is not None

        wait_for(ended, 60, f"rollback {op.id} to end", interval=0.1,
                 detail=lambda: _timeline(site) + "\n" + b.stderr())  # fmt: skip
        b.stop()
        check_invariants(site.store, final=True)
        done = site.ops.operation(op.id)
        assert done.outcome == "rolled-back", _timeline(site)
        lease = current(site.store)
        assert lease is not None and lease.holder == "ctl-b"
        assert lease.generation == deposed.generation + 1
        acted = [e for e in _events(site) if e.actor in ("ctl-a", "ctl-b")]
        actors = [e.actor for e in acted]
        assert actors == sorted(actors), "ctl-a acted after ctl-b took over"
        took_over = next(e for e in acted if e.actor == "ctl-b")
        assert took_over.at.timestamp() >= deposed.expires_at, "ctl-b acted on a live lease"
        assert took_over.at.timestamp() - died < LEASE_S + 2.0, _timeline(site)
    except BaseException:
        for p in procs:
            p.kill()
        raise
    finally:
        site.store.dispose()
