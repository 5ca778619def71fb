"""Drills: rehearsed incidents. Inject a fault into the live release, let the policy respond,
and measure time to detect, time to recover and the requests affected.

Faults are injected *through the gateway* (a row the gateway's workers read with their route
tables), never by editing artifacts, so a drill exercises exactly the path a real incident
takes: telemetry, triggers and gates, the controller, the route table, verification.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from backout.control import capabilities
from backout.control.detection import NO_TARGET
from backout.control.operations import Operation, Operations
from backout.control.phases import Phase
from backout.errors import NotFound
from backout.registry.releases import Registry
from backout.store import Store, as_utc, audit, bump_generation, schema
from backout.telemetry.batches import read_batches
from backout.traffic.deployments import Deployments
from backout.traffic.faults import Fault

F = schema.faults
D = schema.drills


@dataclass
class DrillResult:
    """What one drill measured."""

    id: int
    model: str
    fault: str
    release: str
    started_at: float
    detected_at: float | None = None
    recovered_at: float | None = None
    completed_at: float | None = None
    target: str | None = None
    outcome: str = "running"
    affected: int = 0  # requests of the faulted release that failed while the fault was live
    completion_held: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def time_to_detect(self) -> float | None:
        return None if self.detected_at is None else self.detected_at - self.started_at

    @property
    def time_to_recover(self) -> float | None:
        return None if self.recovered_at is None else self.recovered_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "model": self.model, "fault": self.fault, "release": self.release,
            "started_at": self.started_at, "detected_at": self.detected_at,
            "recovered_at": self.recovered_at, "completed_at": self.completed_at,
            "time_to_detect_s": self.time_to_detect, "time_to_recover_s": self.time_to_recover,
            "target": self.target, "outcome": self.outcome, "requests_affected": self.affected,
            "completion_held": self.completion_held, "notes": self.notes,
        }  # fmt: skip


def run_drill(
    store: Store,
    registry: Registry,
    model: str,
    fault: Fault,
    *,
    actor: str,
    after: float = 0.0,
    timeout: float = 180.0,
    release: str | None = None,
    on_progress: Callable[[str], None] | None = None,
    poll: float = 0.1,
) -> DrillResult:
    """Inject ``fault`` into ``model``'s live release and wait for the policy to respond.

    The gateway and the controller must be running (``backout serve``) with traffic flowing.
    The fault is lifted when the drill ends, whatever happens.
    """
    capabilities.check_drill(Operations(store).policy_for(model), model)
    deployments = Deployments(store, registry)
    table = deployments.require(model)
    weights = table.weights
    victim = release or max(weights, key=lambda v: weights[v])
    if victim not in weights:
        raise NotFound(f"{model}@{victim} takes no traffic now; live: {', '.join(weights)}")
    start = time.time() + after
    with store.write() as conn:
        drill_id = int(
            conn.execute(
                D.insert().values(
                    model=model, fault=fault.label, release=victim, started_at=start, result={}
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        last_op = Operations.last_id_in(conn, model)
        conn.execute(F.insert().values(model=model, version=victim, kind=fault.kind, value=fault.value,
                                       start_at=start, end_at=start + timeout, drill_id=drill_id))  # fmt: skip
        bump_generation(conn)
        started = audit.append(conn, "drill.started", model=model, actor=actor,
                     reason=f"drill {drill_id}: {fault.label} on {model}@{victim}",
                     data={"drill": drill_id, "fault": fault.label, "release": victim, "start_at": start})  # fmt: skip
    result = DrillResult(drill_id, model, fault.label, victim, start)
    say = on_progress or (lambda _msg: None)
    say(f"drill {drill_id}: injecting {fault.label} into {model}@{victim}")
    try:
        deadline = start + timeout
        while time.time() < deadline:
            time.sleep(poll)
            op = _rollback_since(store, model, last_op)
            if op is None:
                # No rollback (yet): a trigger may still have fired, with nowhere to go back
                # to or no safe way back. That is a detection, and nothing recovers from it
                # until a person acts, so the drill ends there and says so.
                seen = _detected_without_rollback(store, model, started.seq, start)
                if seen is not None:
                    kind, at, reason = seen
                    result.detected_at = at
                    result.outcome = "no-target" if kind == NO_TARGET else "frozen"
                    result.notes.append(f"detected, but nothing rolled back: {reason}")
                    say(f"detected after {at - start:.1f} s, no rollback: {reason}")
                    break
                continue
            if result.detected_at is None:
                result.detected_at = op.started_at
                result.target = op.target
                say(f"detected after {op.started_at - start:.1f} s: {op.reason}")
            if result.recovered_at is None:
                full = full_on_target(store, model, op.id, op.target)
                if full is not None:
                    result.recovered_at = full
                    say(f"recovered after {full - start:.1f} s: all traffic on {op.target}")
            if op.phase == Phase.FROZEN:
                result.outcome = "frozen"
                result.notes.append(f"the model froze during the rollback: {op.reason}")
                say(f"frozen after {time.time() - start:.1f} s: a person must act")
                break
            if op.ended_at is not None:
                result.completed_at = op.ended_at
                result.outcome = op.outcome or "ended"
                result.completion_held = op.outcome == "rolled-back"
                break
        else:
            result.outcome = "timed-out"
            result.notes.append(f"no complete recovery within {timeout:g} s")
    finally:
        now = time.time()
        with store.write() as conn:
            conn.execute(F.update().where(F.c.drill_id == drill_id).values(end_at=now))
            bump_generation(conn)
        until = result.recovered_at or now
        per = read_batches(store, model, since=start - 1, until=until + 1).get(victim, [])
        result.affected = sum(b.error_count for b in per if b.start >= start - 1)
        with store.write() as conn:
            conn.execute(
                D.update().where(D.c.id == drill_id).values(ended_at=now, result=result.to_dict())
            )
            audit.append(conn, "drill.ended", model=model, actor=actor,
                         reason=f"drill {drill_id}: {result.outcome}; detect {_s(result.time_to_detect)}, recover {_s(result.time_to_recover)}",
                         data=result.to_dict())  # fmt: skip
    return result


def list_drills(store: Store, model: str, limit: int = 20) -> list[dict[str, Any]]:
    with store.read() as conn:
        rows = conn.execute(
            sa.select(D).where(D.c.model == model).order_by(D.c.id.desc()).limit(limit)
        )
        return [dict(r.result) | {"id": r.id} for r in rows]


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"


def _detected_without_rollback(
    store: Store, model: str, after_seq: int, start: float
) -> tuple[str, float, str] | None:
    """The first trigger-with-no-target or freeze event since the drill began, if any."""
    with store.read() as conn:
        for e in audit.list_events(conn, model, kinds=(NO_TARGET, "freeze"), since_seq=after_seq):
            at = as_utc(e.at).timestamp()
            if at >= start:
                return e.kind, at, e.reason
    return None


def _rollback_since(store: Store, model: str, after_id: int) -> Operation | None:
    return Operations(store).first_rollback_after(model, after_id)


def full_on_target(store: Store, model: str, op_id: int, target: str) -> float | None:
    """When the operation's traffic first put 100% on the target (epoch seconds)."""
    E = schema.events
    with store.read() as conn:
        rows = conn.execute(
            sa.select(E.c.at, E.c.data)
            .where(E.c.model == model, E.c.kind == "traffic.applied")
            .order_by(E.c.seq.desc())
            .limit(50)
        )
        hits = [
            as_utc(r.at).timestamp()
            for r in rows
            if (r.data or {}).get("operation") == op_id
            and (r.data or {}).get("weights") == {target: 100.0}
        ]
    return min(hits) if hits else None
