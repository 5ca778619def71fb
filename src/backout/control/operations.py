"""Operations as stored: the typed record of a rollout or rollback, and every SQL it takes.

An operation's row holds everything the controller needs to resume it after a crash: the
phase, the step, the weights that should be live, its typed state, and the policy it runs
by, frozen at its start. At most one operation per model is active (``ended_at`` is NULL),
which a unique index holds. :class:`Operations` is the only code that reads or writes the
``operations``, ``freezes`` and ``policies`` tables; everything else asks it (the
controller lease has its own module, :mod:`backout.control.lease`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Connection

from backout.control.phases import TERMINAL, Phase
from backout.control.policy import Policy, default_policy
from backout.store import Store, schema

OPS = schema.operations
FREEZES = schema.freezes
POLICIES = schema.policies


class OperationState(BaseModel):
    """What an operation carries besides its phase, step and weights, typed.

    Stored as JSON in the operation's row; unknown keys from older rows are ignored.
    """

    model_config = ConfigDict(extra="ignore")

    mode: str = ""  # rollback: emergency | staged
    trigger: dict[str, Any] | None = None  # rollback: the evidence that started it, if automatic
    warm: str = ""  # rollback: a note when the target was not a warm rollback point
    from_weights: dict[str, float] = {}  # rollback: the weights before it moved traffic
    superseded: int | None = None  # rollback: the rollout it took over from
    skip_gates: bool = False  # rollback: inside the policy's rollback window
    last_gate: dict[str, Any] | None = None  # the latest gate verdict, for status and reports
    paused_from: Phase | None = None  # paused: the phase to resume in
    forced: bool = False  # paused because traffic was set by hand
    approved_step: int | None = None  # the step a person approved despite its gate
    escalated: int = 0  # how many contacts have been called
    lifted_freeze: str | None = None  # rollback: the freeze a person's emergency rollback lifted


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
    policy: Policy
    reason: str
    actor: str
    started_at: float
    step_started_at: float
    updated_at: float
    state: OperationState = field(default_factory=OperationState)
    ended_at: float | None = None
    outcome: str | None = None

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "model": self.model, "kind": self.kind, "phase": self.phase.value,
            "step": self.step, "stable": self.stable, "target": self.target,
            "weights": self.weights, "state": self.state.model_dump(mode="json"),
            "reason": self.reason, "actor": self.actor, "started_at": self.started_at,
            "step_started_at": self.step_started_at, "updated_at": self.updated_at,
            "ended_at": self.ended_at, "outcome": self.outcome,
        }  # fmt: skip


class Stale(Exception):
    """The operation changed after this tick read it (a command from another process landed
    in between): the tick's decision is void, and the next tick decides on fresh state."""


_PARSED: OrderedDict[bytes, Policy] = OrderedDict()
_PARSED_LOCK = threading.Lock()
_PARSED_MAX = 256


def parsed_policy(doc: dict[str, Any]) -> Policy:
    """The :class:`Policy` a stored document describes, validated once per distinct document.

    Validating a policy costs about a millisecond, and every read of a model's state (its
    operation, its stored policy) would pay it again for the same bytes; the key is the
    document itself, so a changed policy is validated afresh at once. Policies are never
    changed in place (``model_copy`` makes a new one), so sharing them is safe."""
    key = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    with _PARSED_LOCK:
        held = _PARSED.get(key)
        if held is not None:
            _PARSED.move_to_end(key)
            return held
    policy = Policy.model_validate(doc)
    with _PARSED_LOCK:
        _PARSED[key] = policy
        while len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
    return policy


def from_row(r: Any) -> Operation:
    """An :class:`Operation` from a row of the ``operations`` table."""
    return Operation(id=r.id, model=r.model, kind=r.kind, phase=Phase(r.phase), step=r.step, stable=r.stable,
                     target=r.target, weights={k: float(v) for k, v in r.weights.items()},
                     state=OperationState.model_validate(r.state or {}),
                     policy=parsed_policy(r.policy), reason=r.reason, actor=r.actor,
                     started_at=r.started_at, step_started_at=r.step_started_at, updated_at=r.updated_at,
                     ended_at=r.ended_at, outcome=r.outcome)  # fmt: skip


class Operations:
    """The repository of operations, freezes and policies."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- operations ------------------------------------------------------------------------

    @staticmethod
    def active_in(conn: Connection, model: str) -> Operation | None:
        """The model's operation in progress, read in the caller's transaction."""
        row = conn.execute(
            sa.select(OPS).where(OPS.c.model == model, OPS.c.ended_at.is_(None))
        ).first()
        return from_row(row) if row else None

    def active(self, model: str) -> Operation | None:
        with self.store.read() as conn:
            return self.active_in(conn, model)

    def get(self, op_id: int) -> Operation | None:
        with self.store.read() as conn:
            row = conn.execute(sa.select(OPS).where(OPS.c.id == op_id)).first()
        return from_row(row) if row else None

    def recent(
        self, model: str, limit: int = 20, *, kind: str | None = None, after: int = 0
    ) -> list[Operation]:
        """The model's operations, newest first (``after``: only ids above it)."""
        q = sa.select(OPS).where(OPS.c.model == model, OPS.c.id > after)
        if kind is not None:
            q = q.where(OPS.c.kind == kind)
        with self.store.read() as conn:
            return [from_row(r) for r in conn.execute(q.order_by(OPS.c.id.desc()).limit(limit))]

    @staticmethod
    def last_id_in(conn: Connection, model: str) -> int:
        """The id of the model's newest operation (0 when it has none)."""
        return int(
            conn.execute(sa.select(sa.func.max(OPS.c.id)).where(OPS.c.model == model)).scalar() or 0
        )

    def first_rollback_after(self, model: str, after_id: int) -> Operation | None:
        """The model's first rollback with an id above ``after_id``."""
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(OPS)
                .where(OPS.c.model == model, OPS.c.id > after_id, OPS.c.kind == "rollback")
                .order_by(OPS.c.id)
            ).first()
        return from_row(row) if row else None

    @staticmethod
    def insert(conn: Connection, model: str, kind: str, phase: Phase, stable: str, target: str,
               weights: dict[str, float], policy: Policy, reason: str, actor: str, now: float, *,
               state: OperationState | None = None, step_at: float | None = None) -> Operation:  # fmt: skip
        """Write a new operation in ``phase`` (ended at once when the phase is terminal)."""
        ended = phase in TERMINAL
        op = Operation(id=0, model=model, kind=kind, phase=phase, step=0, stable=stable, target=target,
                       weights=weights, state=state or OperationState(), policy=policy, reason=reason,
                       actor=actor, started_at=now, step_started_at=step_at or now, updated_at=now,
                       ended_at=now if ended else None, outcome=phase.value if ended else None)  # fmt: skip
        values = op.to_dict() | {"policy": policy.model_dump(mode="json")}
        del values["id"]
        key = conn.execute(OPS.insert().values(**values)).inserted_primary_key
        assert key is not None
        op.id = int(key[0])
        return op

    @staticmethod
    def update_if_unchanged(
        conn: Connection, op: Operation, seen_phase: Phase, seen_at: float
    ) -> None:
        """Write ``op`` over its row only if the row is still as it was read; else :class:`Stale`.

        A tick decides on what it read before its write began, and a command from another
        process (pause, abort) may have landed in between; writing over it would undo the
        command.
        """
        written = conn.execute(OPS.update().where(
            OPS.c.id == op.id, OPS.c.phase == seen_phase.value, OPS.c.updated_at == seen_at,
            OPS.c.ended_at.is_(None),
        ).values(
            phase=op.phase.value, step=op.step, weights=op.weights,
            state=op.state.model_dump(mode="json"), step_started_at=op.step_started_at,
            updated_at=op.updated_at, ended_at=op.ended_at, outcome=op.outcome,
        )).rowcount  # fmt: skip
        if written != 1:
            raise Stale(op.id)

    @staticmethod
    def check_fresh(conn: Connection, op: Operation) -> None:
        """Raise :class:`Stale` unless ``op`` is still active and unchanged in the store."""
        row = conn.execute(
            sa.select(OPS.c.phase, OPS.c.updated_at).where(
                OPS.c.id == op.id, OPS.c.ended_at.is_(None)
            )
        ).first()
        if row is None or row.phase != op.phase.value or row.updated_at != op.updated_at:
            raise Stale(op.id)

    @staticmethod
    def merge_state(conn: Connection, op_id: int, **fields: Any) -> None:
        """Set some fields of an active operation's state, keeping the rest as stored.

        For writes that are not decisions (the latest gate verdict, an escalation level):
        the rest of the state may have changed since the caller read it.
        """
        stored = conn.execute(
            sa.select(OPS.c.state).where(OPS.c.id == op_id, OPS.c.ended_at.is_(None))
        ).scalar()
        if stored is None:
            return
        state = OperationState.model_validate(stored).model_copy(update=fields)
        conn.execute(
            OPS.update().where(OPS.c.id == op_id).values(state=state.model_dump(mode="json"))
        )

    # -- freezes ---------------------------------------------------------------------------

    @staticmethod
    def freeze_reason(conn: Connection, model: str) -> str | None:
        return conn.execute(sa.select(FREEZES.c.reason).where(FREEZES.c.model == model)).scalar()

    def frozen(self, model: str) -> str | None:
        """Why ``model`` is frozen, or None."""
        with self.store.read() as conn:
            return self.freeze_reason(conn, model)

    @staticmethod
    def add_freeze(conn: Connection, model: str, why: str, at: float, op_id: int | None) -> bool:
        """Freeze ``model``; False when it already was."""
        if Operations.freeze_reason(conn, model) is not None:
            return False
        conn.execute(FREEZES.insert().values(model=model, reason=why, at=at, operation_id=op_id))
        return True

    @staticmethod
    def remove_freeze(conn: Connection, model: str) -> bool:
        """Lift the freeze; False when ``model`` was not frozen."""
        return bool(conn.execute(FREEZES.delete().where(FREEZES.c.model == model)).rowcount)

    # -- policies --------------------------------------------------------------------------

    def policy_for(self, model: str) -> Policy:
        """The model's stored policy, or the default one."""
        doc = self.policy_doc(model)
        return parsed_policy(doc) if doc is not None else default_policy(model)

    def policy_doc(self, model: str) -> dict[str, Any] | None:
        """The model's stored policy as stored (JSON), or None when it has none."""
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(POLICIES.c.policy).where(POLICIES.c.model == model)
            ).first()
        return dict(row.policy) if row else None

    @staticmethod
    def policy_in(conn: Connection, model: str) -> tuple[Policy, datetime | None]:
        """The model's policy and when it was stored (the default one, None), in ``conn``."""
        row = conn.execute(
            sa.select(POLICIES.c.policy, POLICIES.c.updated_at).where(POLICIES.c.model == model)
        ).first()
        if row is None:
            return default_policy(model), None
        at = row.updated_at if isinstance(row.updated_at, datetime) else None
        return parsed_policy(row.policy), at

    def policy_stored_at(self, model: str) -> datetime | None:
        """When the model's policy was last stored (None: it runs by the default one)."""
        with self.store.read() as conn:
            at = conn.execute(
                sa.select(POLICIES.c.updated_at).where(POLICIES.c.model == model)
            ).scalar()
        return at if isinstance(at, datetime) else None

    @staticmethod
    def save_policy(conn: Connection, model: str, doc: dict[str, Any], source: str) -> None:
        now = datetime.now(UTC)
        if conn.execute(sa.select(POLICIES.c.model).where(POLICIES.c.model == model)).first():
            conn.execute(
                POLICIES.update()
                .where(POLICIES.c.model == model)
                .values(policy=doc, source=source, updated_at=now)
            )
        else:
            conn.execute(
                POLICIES.insert().values(model=model, policy=doc, source=source, updated_at=now)
            )
