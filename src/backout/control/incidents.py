"""Incidents: what the public and the responders are told while a model is rolled back.

An incident is opened automatically when a rollback starts (or an operation freezes), in the
transaction of that decision, and follows the operation's phases in Statuspage's words:

=================================  ===============  =====================================
the operation                      incident status  why
=================================  ===============  =====================================
a staged rollback starts           investigating    traffic starts moving back
its first step passes              identified       the target proved itself: the cause
                                                    is the release rolled back from
all traffic on the target          monitoring       the verification window runs
(an emergency rollback starts here)
frozen                             identified       halted, people called
verified (rolled back), unfrozen   resolved
=================================  ===============  =====================================

A model has at most one open incident: a rollback that takes over another one continues
the same incident. An incident commander adds updates of their own (any status, their own
words). Public text comes from the policy's ``status_page`` templates
(:mod:`backout.control.runbook`); versions, evidence and consumers stay in ``detail``,
which is never shown publicly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.control.operations import Operation
from backout.control.phases import Event, Phase
from backout.control.policy import Policy
from backout.control.runbook import public_text
from backout.errors import Conflict, NotFound, ValidationError
from backout.store import Store, audit, schema

INCIDENTS = schema.incidents
UPDATES = schema.incident_updates
MAX_MESSAGE = 2000


class IncidentStatus(StrEnum):
    """An incident's progress, in Statuspage's vocabulary."""

    INVESTIGATING = "investigating"  # something is wrong; traffic is moving back
    IDENTIFIED = "identified"  # the cause is known (the release rolled back from)
    MONITORING = "monitoring"  # all traffic is on the known-good release; watching it
    RESOLVED = "resolved"  # verified, or closed by the incident commander


@dataclass
class Update:
    """One entry of an incident's timeline."""

    id: int
    at: float
    status: IncidentStatus
    message: str  # public
    actor: str
    automatic: bool
    detail: dict[str, Any] = field(default_factory=dict)  # private: versions, evidence

    def to_dict(self, *, public: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id, "at": self.at, "status": self.status.value, "message": self.message,
            "automatic": self.automatic,
        }  # fmt: skip
        if not public:
            doc |= {"actor": self.actor, "detail": self.detail}
        return doc


@dataclass
class Incident:
    """An incident as stored, with its updates oldest first."""

    id: int
    model: str
    operation_id: int | None
    last_operation_id: int | None
    status: IncidentStatus
    title: str
    opened_at: float
    updated_at: float
    resolved_at: float | None
    updates: list[Update] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    def to_dict(self, *, public: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id, "status": self.status.value, "title": self.title,
            "opened_at": self.opened_at, "updated_at": self.updated_at,
            "resolved_at": self.resolved_at,
            "updates": [u.to_dict(public=public) for u in self.updates],
        }  # fmt: skip
        if not public:
            doc |= {"model": self.model, "operation": self.operation_id,
                    "last_operation": self.last_operation_id}  # fmt: skip
        return doc


# -- following the operation ---------------------------------------------------------------


def automatic_status(op: Operation, event: Event | None) -> tuple[IncidentStatus, str] | None:
    """The incident status (and the template to word it) an operation's change leads to;
    None when the change says nothing new to the public."""
    phase = op.phase
    if phase == Phase.FROZEN:
        return IncidentStatus.IDENTIFIED, "frozen"
    if op.kind != "rollback" and phase != Phase.UNFROZEN:
        return None
    if phase == Phase.ROLLING_BACK:
        if event in (Event.ROLLBACK_STARTED, None):
            return IncidentStatus.INVESTIGATING, "investigating"
        if event == Event.ROLLBACK_STEP_PASSED:
            return IncidentStatus.IDENTIFIED, "identified"
        return None
    if phase == Phase.VERIFYING:
        return IncidentStatus.MONITORING, "monitoring"
    if phase in (Phase.ROLLED_BACK, Phase.UNFROZEN):
        return IncidentStatus.RESOLVED, "resolved"
    if event == Event.TARGET_UNHEALTHY:
        # The way back is no better: the policy freezes traffic (or reverts) and calls people.
        frozen = op.policy.termination.on_abort == "freeze"
        return IncidentStatus.IDENTIFIED, "frozen" if frozen else "investigating"
    return None  # paused, or aborted (another operation or a person decides what follows)


def follow(conn: Connection, op: Operation, event: Event | None, at: float, actor: str) -> None:
    """Open or move the model's incident after ``op`` changed, in the caller's transaction.

    Called by the controller wherever an operation starts or changes phase. A rollback (or a
    freeze) opens an incident when the model has none open; later changes of the same or a
    following operation add automatic updates when the public status changes.
    """
    step = automatic_status(op, event)
    current = _open_row(conn, op.model)
    if current is None and (step is None or step[0] == IncidentStatus.RESOLVED):
        return
    if step is None:
        # A rollback that takes over continues the incident; a rollout never joins one.
        if current is not None and op.kind == "rollback" and current.last_operation_id != op.id:
            _touch(conn, current.id, at, last_operation_id=op.id)
        return
    status, template = step
    page = op.policy.status_page
    values = _values(conn, op, op.policy)
    message = public_text(page.messages[template], values)
    detail = {"operation": op.id, "kind": op.kind, "phase": op.phase.value,
              "event": event.value if event else None, "from": op.stable, "to": op.target,
              "reason": op.reason}  # fmt: skip
    if current is None:
        key = conn.execute(INCIDENTS.insert().values(
            model=op.model, operation_id=op.id, last_operation_id=op.id, status=status.value,
            title=public_text(page.title, values), opened_at=at, updated_at=at, resolved_at=None,
        )).inserted_primary_key  # fmt: skip
        assert key is not None
        incident_id = int(key[0])
    else:
        incident_id = current.id
        if current.status == status.value and template != "frozen":
            _touch(conn, incident_id, at, last_operation_id=op.id)
            return
        _touch(conn, incident_id, at, last_operation_id=op.id, status=status.value,
               resolved_at=at if status == IncidentStatus.RESOLVED else None)  # fmt: skip
    conn.execute(UPDATES.insert().values(
        incident_id=incident_id, at=at, status=status.value, message=message, actor=actor,
        automatic=True, detail=detail,
    ))  # fmt: skip


def follow_freeze(conn: Connection, model: str, policy: Policy, frozen: bool, at: float,
                  actor: str) -> None:  # fmt: skip
    """Open or move the incident of a freeze that no operation carries (a trigger with no way
    back, a person's freeze with nothing running), and resolve it when the freeze is lifted."""
    current = _open_row(conn, model)
    if not frozen and current is None:
        return
    page = policy.status_page
    values = {"component": page.name_for(model), "model": model}
    status = IncidentStatus.IDENTIFIED if frozen else IncidentStatus.RESOLVED
    message = public_text(page.messages["frozen" if frozen else "resolved"], values)
    if current is None:
        key = conn.execute(INCIDENTS.insert().values(
            model=model, operation_id=None, last_operation_id=None, status=status.value,
            title=public_text(page.title, values), opened_at=at, updated_at=at, resolved_at=None,
        )).inserted_primary_key  # fmt: skip
        assert key is not None
        incident_id = int(key[0])
    else:
        incident_id = int(current.id)
        _touch(conn, incident_id, at, status=status.value, resolved_at=None if frozen else at)
    conn.execute(UPDATES.insert().values(
        incident_id=incident_id, at=at, status=status.value, message=message, actor=actor,
        automatic=True, detail={"freeze": frozen},
    ))  # fmt: skip


def _values(conn: Connection, op: Operation, policy: Policy) -> dict[str, Any]:
    """What the public templates may say about ``op`` (the policy's switches allow the rest)."""
    page = policy.status_page
    values: dict[str, Any] = {"component": page.name_for(op.model), "model": op.model}
    if page.show_versions:
        values |= {"from_version": op.stable, "to_version": op.target}
    if page.show_evidence:
        values["reason"] = op.reason
    if page.show_consumers:
        names = conn.execute(
            sa.select(schema.consumers.c.name)
            .where(schema.consumers.c.model == op.model)
            .order_by(schema.consumers.c.name)
        ).scalars()
        values["consumers"] = ", ".join(names) or "-"
    return values


def _open_row(conn: Connection, model: str) -> Any:
    return conn.execute(
        sa.select(INCIDENTS)
        .where(INCIDENTS.c.model == model, INCIDENTS.c.resolved_at.is_(None))
        .order_by(INCIDENTS.c.id.desc())
    ).first()


def _touch(conn: Connection, incident_id: int, at: float, **values: Any) -> None:
    conn.execute(
        INCIDENTS.update().where(INCIDENTS.c.id == incident_id).values(updated_at=at, **values)
    )


# -- reading and people's updates ------------------------------------------------------------


def _from_row(r: Any, updates: list[Update]) -> Incident:
    return Incident(id=r.id, model=r.model, operation_id=r.operation_id,
                    last_operation_id=r.last_operation_id, status=IncidentStatus(r.status),
                    title=r.title, opened_at=r.opened_at, updated_at=r.updated_at,
                    resolved_at=r.resolved_at, updates=updates)  # fmt: skip


def _update_from_row(r: Any) -> Update:
    return Update(id=r.id, at=r.at, status=IncidentStatus(r.status), message=r.message,
                  actor=r.actor, automatic=bool(r.automatic), detail=dict(r.detail or {}))  # fmt: skip


class Incidents:
    """The repository of incidents: the only code that reads or writes their tables."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def list_in(conn: Connection, model: str | None = None, *, limit: int = 50,
                since: float | None = None, open_only: bool = False) -> list[Incident]:  # fmt: skip
        """Incidents newest first, each with its updates (``since``: open, or resolved after)."""
        q = sa.select(INCIDENTS)
        if model is not None:
            q = q.where(INCIDENTS.c.model == model)
        if open_only:
            q = q.where(INCIDENTS.c.resolved_at.is_(None))
        if since is not None:
            q = q.where(sa.or_(INCIDENTS.c.resolved_at.is_(None), INCIDENTS.c.resolved_at >= since))
        rows = list(conn.execute(q.order_by(INCIDENTS.c.id.desc()).limit(limit)))
        if not rows:
            return []
        updates: dict[int, list[Update]] = {r.id: [] for r in rows}
        for u in conn.execute(
            sa.select(UPDATES)
            .where(UPDATES.c.incident_id.in_(list(updates)))
            .order_by(UPDATES.c.id)
        ):
            updates[u.incident_id].append(_update_from_row(u))
        return [_from_row(r, updates[r.id]) for r in rows]

    def list(self, model: str | None = None, *, limit: int = 50, since: float | None = None,
             open_only: bool = False) -> list[Incident]:  # fmt: skip
        with self.store.read() as conn:
            return self.list_in(conn, model, limit=limit, since=since, open_only=open_only)

    def get(self, incident_id: int) -> Incident:
        """One incident; :class:`NotFound` when there is none with that id."""
        with self.store.read() as conn:
            row = conn.execute(sa.select(INCIDENTS).where(INCIDENTS.c.id == incident_id)).first()
            if row is None:
                raise NotFound(
                    f"incident {incident_id} does not exist: see `backout incident list`"
                )
            ups = conn.execute(
                sa.select(UPDATES)
                .where(UPDATES.c.incident_id == incident_id)
                .order_by(UPDATES.c.id)
            )
            return _from_row(row, [_update_from_row(u) for u in ups])

    def current(self, model: str) -> Incident | None:
        """The model's open incident, or None."""
        found = self.list(model, limit=1, open_only=True)
        return found[0] if found else None

    def for_operation(self, op_id: int) -> Incident | None:
        """The incident an operation opened or continued, or None."""
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(INCIDENTS.c.id)
                .where(
                    sa.or_(
                        INCIDENTS.c.operation_id == op_id, INCIDENTS.c.last_operation_id == op_id
                    )
                )
                .order_by(INCIDENTS.c.id)
            ).first()
        return self.get(int(row.id)) if row else None

    def changed_at(self) -> float:
        """When any incident last changed (0 with none): cheap, for pages that poll."""
        with self.store.read() as conn:
            return float(conn.execute(sa.select(sa.func.max(INCIDENTS.c.updated_at))).scalar() or 0)

    def add_update(self, model: str, status: str, message: str, *, actor: str,
                   at: float | None = None) -> Incident:  # fmt: skip
        """An incident commander's update to the model's open incident, in their words.

        ``resolved`` closes the incident. :class:`Conflict` when the model has no open
        incident, :class:`ValidationError` for an unknown status or an empty message.
        """
        try:
            new = IncidentStatus(status)
        except ValueError:
            choices = ", ".join(s.value for s in IncidentStatus)
            raise ValidationError(f"status {status!r} is not one of {choices}") from None
        text = message.strip()
        if not text:
            raise ValidationError("the message is empty: say what the public should know")
        if len(text) > MAX_MESSAGE:
            raise ValidationError(f"the message has {len(text)} characters; at most {MAX_MESSAGE}")
        now = datetime.now(UTC).timestamp() if at is None else at
        with self.store.write() as conn:
            row = _open_row(conn, model)
            if row is None:
                raise Conflict(f"{model} has no open incident: one opens when a rollback starts")
            _touch(conn, row.id, now, status=new.value,
                   resolved_at=now if new == IncidentStatus.RESOLVED else None)  # fmt: skip
            conn.execute(UPDATES.insert().values(
                incident_id=row.id, at=now, status=new.value, message=text, actor=actor,
                automatic=False, detail={},
            ))  # fmt: skip
            audit.append(conn, "incident.update", model=model, actor=actor, reason=text,
                         data={"incident": row.id, "status": new.value},
                         at=datetime.fromtimestamp(now, UTC))  # fmt: skip
            incident_id = int(row.id)
        return self.get(incident_id)
