"""Operations: the stored state of rollouts and rollbacks, and their phases.

An operation is one rollout or one rollback (an incident) of a model. Its row in the store
holds everything the controller needs to resume it after a crash: the phase, the step, the
weights that should be live, counters, and the policy it runs by, frozen at its start. At
most one operation per model is active (``ended_at`` is NULL), which a unique index holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.control.policy import Policy
from backout.store import Store, schema

OPS = schema.operations


class Phase(StrEnum):
    """Where an operation is. Terminal phases end the operation."""

    ROLLING_OUT = "rolling-out"  # the candidate takes a step's weight and bakes behind a gate
    AWAITING_APPROVAL = "awaiting-approval"  # inconclusive or missing data: a human decides
    PAUSED = "paused"  # held by a human (or a forced `backout traffic`); nothing moves
    COMPLETING = "completing"  # candidate at 100%, proving the completion criteria
    ROLLING_BACK = "rolling-back"  # staged rollback: the target takes steps behind a gate
    VERIFYING = "verifying"  # all traffic on the target; its verification window runs
    FROZEN = "frozen"  # both releases unhealthy: traffic halted where it is, escalated
    SUCCEEDED = "succeeded"  # rollout complete; the candidate is known-good (terminal)
    ROLLED_BACK = "rolled-back"  # rollback complete and verified (terminal)
    ABORTED = "aborted"  # stopped by a human or a termination signal (terminal)
    UNFROZEN = "unfrozen"  # a freeze lifted by an explicit command (terminal)


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.UNFROZEN})
_ROLLBACK_ENTRY = frozenset({Phase.ROLLING_BACK, Phase.VERIFYING, Phase.FROZEN})

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.ROLLING_OUT: frozenset(
        {Phase.ROLLING_OUT, Phase.AWAITING_APPROVAL, Phase.PAUSED, Phase.COMPLETING, Phase.ABORTED}
        | _ROLLBACK_ENTRY
    ),
    Phase.AWAITING_APPROVAL: frozenset(
        {Phase.ROLLING_OUT, Phase.COMPLETING, Phase.PAUSED, Phase.ABORTED} | _ROLLBACK_ENTRY
    ),
    Phase.PAUSED: frozenset(
        {Phase.ROLLING_OUT, Phase.AWAITING_APPROVAL, Phase.COMPLETING, Phase.ABORTED}
        | _ROLLBACK_ENTRY
    ),
    Phase.COMPLETING: frozenset({Phase.SUCCEEDED, Phase.PAUSED, Phase.ABORTED} | _ROLLBACK_ENTRY),
    Phase.ROLLING_BACK: frozenset(
        {Phase.ROLLING_BACK, Phase.VERIFYING, Phase.PAUSED, Phase.ABORTED, Phase.FROZEN}
    ),
    Phase.VERIFYING: frozenset({Phase.ROLLED_BACK, Phase.PAUSED, Phase.FROZEN}),
    Phase.FROZEN: frozenset({Phase.UNFROZEN}),
    Phase.SUCCEEDED: frozenset(),
    Phase.ROLLED_BACK: frozenset(),
    Phase.ABORTED: frozenset(),
    Phase.UNFROZEN: frozenset(),
}


@dataclass
class Operation:
    """A rollout or rollback as stored: everything needed to resume it."""

    id: int
    model: str
    kind: str  # rollout | rollback
    phase: Phase
    step: int
    stable: str  # rollout: the release it replaces; rollback: the release rolled back from
    target: str  # rollout: the candidate; rollback: the target
    weights: dict[str, float]
    state: dict[str, Any]
    policy: Policy
    reason: str
    actor: str
    started_at: float
    step_started_at: float
    updated_at: float
    ended_at: float | None = None
    outcome: str | None = None

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "model": self.model, "kind": self.kind, "phase": self.phase.value,
            "step": self.step, "stable": self.stable, "target": self.target,
            "weights": self.weights, "state": self.state, "reason": self.reason,
            "actor": self.actor, "started_at": self.started_at,
            "step_started_at": self.step_started_at, "updated_at": self.updated_at,
            "ended_at": self.ended_at, "outcome": self.outcome,
        }  # fmt: skip


class _Stale(Exception):
    """The operation changed after this tick read it (a command from another process landed
    in between): the tick's decision is void, and the next tick decides on fresh state."""


def acquire_lease(store: Store, name: str, holder: str, ttl: float, now: float) -> bool:
    """Take or renew the lease ``name``; False when another live holder has it."""
    L = schema.leases
    with store.write() as conn:
        row = conn.execute(sa.select(L).where(L.c.name == name)).first()
        if row is None:
            conn.execute(L.insert().values(name=name, holder=holder, expires_at=now + ttl))
            return True
        if row.holder == holder or row.expires_at < now:
            conn.execute(
                L.update().where(L.c.name == name).values(holder=holder, expires_at=now + ttl)
            )
            return True
        return False


def _check_fresh(conn: Connection, op: Operation) -> None:
    """Raise :class:`_Stale` unless ``op`` is still active and unchanged in the store."""
    row = conn.execute(
        sa.select(OPS.c.phase, OPS.c.updated_at).where(OPS.c.id == op.id, OPS.c.ended_at.is_(None))
    ).first()
    if row is None or row.phase != op.phase.value or row.updated_at != op.updated_at:
        raise _Stale(op.id)


def _active(conn: Connection, model: str) -> Operation | None:
    row = conn.execute(sa.select(OPS).where(OPS.c.model == model, OPS.c.ended_at.is_(None))).first()
    return _op(row) if row else None


def _op(r: Any) -> Operation:
    return Operation(id=r.id, model=r.model, kind=r.kind, phase=Phase(r.phase), step=r.step, stable=r.stable,
                     target=r.target, weights={k: float(v) for k, v in r.weights.items()}, state=dict(r.state),
                     policy=Policy.model_validate(r.policy), reason=r.reason, actor=r.actor,
                     started_at=r.started_at, step_started_at=r.step_started_at, updated_at=r.updated_at,
                     ended_at=r.ended_at, outcome=r.outcome)  # fmt: skip


def _split(stable: str, candidate: str, candidate_pct: float) -> dict[str, float]:
    """Weights with the candidate at ``candidate_pct`` and the rest on stable."""
    if candidate_pct >= 100:
        return {candidate: 100.0}
    return {stable: round(100.0 - candidate_pct, 2), candidate: round(candidate_pct, 2)}


def _dominant(weights: Mapping[str, int | float]) -> str:
    return max(weights, key=lambda v: weights[v])


def _clean(weights: Mapping[str, float]) -> dict[str, float]:
    return {v: round(w, 2) for v, w in weights.items() if w > 0}


def _fmt_weights(weights: Mapping[str, float]) -> str:
    return " ".join(f"{v}={w:g}%" for v, w in weights.items())
