"""Alerts: the controller's notifications and escalations, sent without ever slowing it.

Each model's policy names its webhooks (or a notifier is injected, as tests do); a notice is
queued and sent after the transaction that caused it commits; a delivery that finally fails
becomes an event. Escalation calls the policy's next contact when recovery is late, and is
recorded in the same transaction as the decision that needs it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from backout.control.notify import (
    Escalator,
    FailedDelivery,
    Notice,
    Notifier,
    Severity,
    notifier_for,
)
from backout.control.operations import Operation, Operations
from backout.control.phases import Phase
from backout.control.policy import NoticeKind, Policy
from backout.errors import StoreUnavailable
from backout.store import Store, audit
from backout.types import Clock, system_clock

log = logging.getLogger("backout.controller")


class Alerts:
    """Notices and escalations for every model the controller drives."""

    def __init__(self, store: Store, *, actor: str, notifier: Notifier | None = None,
                 clock: Clock = system_clock) -> None:  # fmt: skip
        self.store = store
        self.clock = clock
        self.actor = actor
        self.fixed = notifier  # None: each model's policy names its webhooks
        self._notifiers: dict[str, tuple[tuple[str, ...], Notifier]] = {}

    def notify(self, kind: str, model: str, title: str, text: str, op_id: int, *, policy: Policy,
               severity: str = "info") -> None:  # fmt: skip
        notice = Notice(kind=NoticeKind(kind), model=model, title=title, text=text,
                        severity=Severity(severity), incident=str(op_id))  # fmt: skip
        self.send(model, policy, notice)

    def send(self, model: str, policy: Policy, notice: Notice) -> None:
        try:
            self._notifier(model, policy).send(notice)
        except Exception:  # a failing notifier never blocks or slows a rollback
            log.exception("notification failed")

    def escalation(
        self, conn: Connection, op: Operation, now: float, *, force: bool = False
    ) -> Notice | None:
        """Record the next escalation in the caller's write; the notice to send after commit.

        A freeze or an aborted rollback records its escalation in its own transaction, so a
        controller that dies after the commit cannot leave the freeze without a contact.
        """
        if op.kind != "rollback" and op.phase != Phase.FROZEN and not force:
            return None
        esc = Escalator(op.policy.escalation)
        level = op.state.escalated
        contact = esc.contact(level) if force else esc.due(op.started_at, now, level)
        if contact is None:
            return None
        Operations.merge_state(conn, op.id, escalated=level + 1)
        audit.append(conn, "escalation", model=op.model, actor=self.actor, at=datetime.fromtimestamp(now, UTC),
                     reason=f"escalated to {contact.name}: {op.kind} {op.phase.value} after {now - op.started_at:.0f} s",
                     data={"operation": op.id, "contact": contact.name, "level": level + 1})  # fmt: skip
        op.state.escalated = level + 1
        return esc.notice(level, model=op.model, started_at=op.started_at, now=now,
                          incident=str(op.id), reason=f"{op.kind} {op.phase.value}")  # fmt: skip

    def close(self) -> None:
        """Drain pending notifications (at shutdown)."""
        for _, n in self._notifiers.values():
            n.close(2.0)

    def _notifier(self, model: str, policy: Policy) -> Notifier:
        if self.fixed is not None:
            return self.fixed
        hooks = tuple(policy.notifications.webhooks)
        cached = self._notifiers.get(model)
        if cached is None or cached[0] != hooks:
            if cached is not None:
                cached[1].close(0.1)
            n = notifier_for(policy, on_failure=lambda failed: self._delivery_failed(model, failed))
            self._notifiers[model] = cached = (hooks, n)
        return cached[1]

    def _delivery_failed(self, model: str, failed: FailedDelivery) -> None:
        try:
            with self.store.write() as conn:
                audit.append(conn, "notify.failed", model=model, actor=self.actor,
                             reason=failed.summary, data=failed.to_dict())  # fmt: skip
        except StoreUnavailable as exc:  # the notifier logged the failure; say why it is not kept
            log.warning("could not record %s: %s", failed.summary, exc)
