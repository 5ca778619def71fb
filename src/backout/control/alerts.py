"""Alerts: the controller's notifications and escalations, durable and never in its way.

Each model's policy names its webhooks, its e-mail server and its escalation contacts. A
notice is written to the outbox (:mod:`backout.control.outbox`) in the transaction that
records the decision it reports, so a controller that dies right after committing cannot
lose it; the outbox's delivery worker sends it after the commit, at least once, and a
delivery that fails for good becomes a ``notify.failed`` event. Escalation calls the
policy's next contact when recovery is late, and is recorded — with its notice — in the same
transaction as the decision that needs it.

An injected :class:`~backout.control.notify.Notifier` (tests, dry runs) replaces the outbox:
it hears each notice once the transaction that caused it commits.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.control.mail import SmtpSettings
from backout.control.notify import Escalator, Notice, Notifier, Severity
from backout.control.operations import Operation, Operations
from backout.control.outbox import MailSender, Outbox, WebhookSender, enqueue
from backout.control.phases import Phase
from backout.control.policy import NoticeKind, Policy
from backout.store import Store, audit, schema
from backout.types import Clock, system_clock

log = logging.getLogger("backout.controller")


def after_commit(conn: Connection, fn: Callable[[], None]) -> None:
    """Run ``fn`` when ``conn``'s transaction commits (never if it rolls back)."""

    def call(_: Connection) -> None:
        try:
            fn()
        except Exception:  # what runs after a commit must never undo or break it
            log.exception("after-commit callback failed")

    sa.event.listen(conn, "commit", call, once=True)


class Alerts:
    """Notices and escalations for every model the controller drives."""

    def __init__(self, store: Store, *, actor: str, notifier: Notifier | None = None,
                 clock: Clock = system_clock, outbox: Outbox | None = None) -> None:  # fmt: skip
        self.store = store
        self.clock = clock
        self.actor = actor
        self.fixed = notifier  # None: the outbox, to each model's policy's recipients
        self._outbox = outbox
        # The outbox ids this process queued (committed), newest last; bounded, as a
        # long-running controller queues without end and its worker delivers them anyway.
        self.queued: deque[str] = deque(maxlen=1000)

    @property
    def outbox(self) -> Outbox:
        """The delivery worker's outbox (made on first use: most commands never send)."""
        if self._outbox is None:
            self._outbox = Outbox(self.store, clock=self.clock, actor=self.actor)
        return self._outbox

    def notify(self, kind: str, model: str, title: str, text: str, op_id: int, *, policy: Policy,
               severity: str = "info", conn: Connection | None = None) -> None:  # fmt: skip
        notice = Notice(kind=NoticeKind(kind), model=model, title=title, text=text,
                        severity=Severity(severity), incident=str(op_id))  # fmt: skip
        self.send(model, policy, notice, conn=conn)

    def send(self, model: str, policy: Policy, notice: Notice, *,
             conn: Connection | None = None) -> None:  # fmt: skip
        """Queue ``notice`` in ``conn``'s transaction (or a transaction of its own)."""
        try:
            if conn is None:
                with self.store.write() as own:
                    self._queue(own, policy, notice)
            else:
                self._queue(conn, policy, notice)
        except Exception:  # a failing notification never blocks or slows a rollback
            log.exception("notification of %s could not be queued", model)

    def _queue(self, conn: Connection, policy: Policy, notice: Notice) -> None:
        if self.fixed is not None:
            fixed = self.fixed
            after_commit(conn, lambda: fixed.send(notice))
            return
        n = policy.notifications
        hooks = [*(n.webhooks if notice.kind in n.on else ()), *notice.to]
        smtp = SmtpSettings.from_dict(n.smtp.model_dump()) if n.smtp else None
        ids = enqueue(conn, notice, webhooks=hooks, emails=notice.mail, smtp=smtp,
                      now=self.clock(), actor=self.actor)  # fmt: skip
        if ids:

            def committed() -> None:
                self.queued.extend(ids)
                self.outbox.wake()

            after_commit(conn, committed)

    def deliver_queued(self, *, within: float) -> list[str]:
        """Deliver what this process queued, now and for about ``within`` s at most, with
        short timeouts: for a command that is about to exit, so that its notices do not wait
        for a ``backout serve`` to deliver them. Receivers that cannot be reached or do not
        answer are not waited for; what is left stays pending in the outbox. The ids still
        pending. Nothing is waited for while a controller holds a live lease on the store
        (a ``backout serve`` is running): its delivery worker sends them within a second."""
        ids = list(self.queued)
        self.queued.clear()
        if not ids or self.fixed is not None:
            return []
        with self.store.read() as conn:
            leases = schema.leases
            live = conn.execute(
                sa.select(sa.func.count()).select_from(leases)
                .where(leases.c.expires_at > self.clock())
            ).scalar_one()  # fmt: skip
        if live:
            return ids
        per_send = max(0.2, min(2.0, within))
        outbox = Outbox(
            self.store, clock=self.clock, actor=self.actor,
            senders={"webhook": WebhookSender(timeout=min(1.0, per_send), connect_timeout=0.5,
                                              total_timeout=per_send),
                     "email": MailSender(max_timeout=per_send)},
        )  # fmt: skip
        return outbox.deliver_now(ids, within=within)

    def escalation(
        self, conn: Connection, op: Operation, now: float, *, force: bool = False
    ) -> Notice | None:
        """Record the next escalation and queue its notice, in the caller's write.

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
        notice = esc.notice(level, model=op.model, started_at=op.started_at, now=now,
                            incident=str(op.id), reason=f"{op.kind} {op.phase.value}")  # fmt: skip
        self.send(op.model, op.policy, notice, conn=conn)
        return notice

    def close(self) -> None:
        """Release the outbox's connections (at shutdown); undelivered rows stay queued."""
        if self._outbox is not None:
            self._outbox.close()
