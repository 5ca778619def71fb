"""The transactional outbox: notifications that survive the death of the process sending them.

For the controller, whose decisions must reach people even when it dies right after
committing them. A notice is not sent from the decision: :func:`enqueue` writes one row per
recipient (a webhook or an e-mail address) into the ``outbox`` table, *in the transaction
that records the decision and its event*, so both commit or neither does. A delivery worker
(:class:`Outbox`, a thread of ``backout serve``'s controller) then sends due rows:

- **at least once**: a row is claimed (its next attempt pushed past the send's timeout)
  before it is sent and marked delivered only after the receiver accepted it; a process
  killed in between leaves it to be sent again by the next worker;
- **deduplicated by id**: every row has a random id, sent as the ``Idempotency-Key`` and
  ``X-Backout-Delivery`` headers and as ``backout.id`` in the JSON (``Message-ID`` in mail),
  so a receiver that sees the same id twice can drop the repeat;
- **retried with backoff**: timeouts, connection errors, 429 and 5xx (4xx replies from a
  mail server) are tried again after an exponential, jittered delay, up to ``max_attempts``;
- **failures become events**: a row that fails for good is marked ``failed`` and a
  ``notify.failed`` event (target redacted) is appended in the same transaction.

:class:`Sender` is the boundary: :class:`WebhookSender` (httpx, with connect, read and
total timeouts) and :class:`MailSender` (SMTP, :mod:`backout.control.mail`) are the real ones;
tests may pass their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.control.mail import SmtpSettings, send_mail
from backout.control.notify import Notice, redact_url
from backout.store import Store, audit, schema
from backout.store.outage import Outage
from backout.types import Clock, system_clock

__all__ = [
    "Attempt",
    "MailSender",
    "Outbox",
    "OutboxItem",
    "Sender",
    "WebhookSender",
    "enqueue",
    "redact_target",
    "undelivered",
]

log = logging.getLogger("backout.outbox")
OB = schema.outbox
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One notice on its way to one recipient."""

    id: str
    model: str
    channel: str  # webhook | email
    target: str
    notice: Notice
    smtp: SmtpSettings | None
    attempts: int
    created_at: float

    @property
    def redacted(self) -> str:
        return redact_target(self.channel, self.target)


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one send: ``error`` is empty on success; ``retry`` when trying again
    later may succeed; ``answered`` is False when the receiver could not be reached or did
    not answer in time (a command about to exit does not wait for such a one)."""

    error: str = ""
    retry: bool = False
    answered: bool = True


class Sender(Protocol):
    """Sends one outbox item once. Must return within its timeout and never raise."""

    def send(self, item: OutboxItem, /) -> Attempt:
        """Send ``item``; what happened."""


def redact_target(channel: str, target: str) -> str:
    """A recipient fit for events and logs: a webhook's scheme and host (its path is its
    secret), or an e-mail address as it is."""
    return redact_url(target) if channel == "webhook" else target


def enqueue(
    conn: Connection,
    notice: Notice,
    *,
    webhooks: Sequence[str] = (),
    emails: Sequence[str] = (),
    smtp: SmtpSettings | None = None,
    now: float,
    actor: str = "controller",
) -> list[str]:
    """Write ``notice`` for each recipient into the outbox, in the caller's transaction.

    Returns the ids. An e-mail with no SMTP server to send it is recorded as failed at once
    (with its event), so the gap is visible in the timeline rather than silent.
    """
    ids: list[str] = []
    body = notice.to_dict()
    rows = [("webhook", url) for url in dict.fromkeys(webhooks)]
    rows += [("email", addr) for addr in dict.fromkeys(emails)]
    for channel, target in rows:
        item_id = uuid.uuid4().hex
        doc = {"notice": body, "smtp": smtp.to_dict() if smtp and channel == "email" else None}
        status, error = PENDING, ""
        if channel == "email" and smtp is None:
            status = FAILED
            error = "no mail server: add notifications.smtp to the model's policy"
        conn.execute(
            OB.insert().values(
                id=item_id, created_at=now, model=notice.model, kind=notice.kind.value,
                channel=channel, target=target, notice=doc, status=status, attempts=0,
                next_attempt_at=now, last_error=error, done_at=now if status == FAILED else None,
            )
        )  # fmt: skip
        if status == FAILED:
            _failed_event(conn, item_id, notice, channel, target, 0, error, actor, now)
        ids.append(item_id)
    return ids


def undelivered(conn: Connection, model: str, *, limit: int = 5) -> dict[str, Any]:
    """The model's notices still waiting for delivery (``pending``), for ``status``: how
    many, and the oldest ``limit`` of them with their attempts and last error (recipients
    redacted)."""
    where = sa.and_(OB.c.model == model, OB.c.status == PENDING)
    count = conn.execute(sa.select(sa.func.count()).select_from(OB).where(where)).scalar_one()
    rows = conn.execute(
        sa.select(OB).where(where).order_by(OB.c.created_at, OB.c.id).limit(limit)
    ).all()
    return {
        "pending": int(count),
        "oldest": [
            {"id": r.id, "kind": r.kind, "channel": r.channel,
             "target": redact_target(r.channel, r.target), "attempts": r.attempts,
             "created_at": float(r.created_at), "next_attempt_at": float(r.next_attempt_at),
             "last_error": r.last_error}
            for r in rows
        ],
    }  # fmt: skip


def _failed_event(conn: Connection, item_id: str, notice: Notice, channel: str, target: str,
                  attempts: int, error: str, actor: str, now: float) -> None:  # fmt: skip
    where = redact_target(channel, target)
    audit.append(
        conn, "notify.failed", model=notice.model, actor=actor,
        at=datetime.fromtimestamp(now, UTC),
        reason=(f"notification {notice.kind.value} {notice.title!r} to {where} failed after "
                f"{attempts} attempt(s): {error}"),
        data={"id": item_id, "channel": channel, "target": where, "kind": notice.kind.value,
              "title": notice.title, "incident": notice.incident, "attempts": attempts,
              "error": error},
    )  # fmt: skip


class WebhookSender:
    """Posts an item as Slack-compatible JSON, its id as the idempotency key.

    Every send is bounded: ``connect_timeout`` to connect, ``timeout`` for each read or
    write, and ``total_timeout`` (default twice ``timeout``) for the whole exchange, so a
    receiver that trickles its answer a byte at a time cannot hold the outbox. httpx's
    timeouts are per operation, so the total is enforced with :func:`asyncio.timeout` around
    an async request, in an event loop of the sending thread's own (the outbox sends from a
    small thread pool; a notification is rare enough that a loop per send costs nothing).
    """

    def __init__(
        self, *, timeout: float = 5.0, connect_timeout: float = 2.0,
        total_timeout: float | None = None,
    ) -> None:  # fmt: skip
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.total_timeout = total_timeout or 2 * timeout

    def send(self, item: OutboxItem, /) -> Attempt:
        body = orjson.dumps(item.notice.payload(delivery_id=item.id))
        headers = {"content-type": "application/json", "idempotency-key": item.id,
                   "x-backout-delivery": item.id}  # fmt: skip
        try:
            status = asyncio.run(self._post(item.target, body, headers))
        except httpx.TimeoutException:
            return Attempt(f"no answer within {self.timeout:g}s", retry=True, answered=False)
        except TimeoutError:
            return Attempt(
                f"no whole answer within {self.total_timeout:g}s", retry=True, answered=False
            )
        except httpx.TransportError as exc:
            return Attempt(
                f"connection failed: {exc or type(exc).__name__}", retry=True, answered=False
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return Attempt(f"invalid webhook URL: {exc}")
        if 200 <= status < 300:
            return Attempt()
        # 429 and 5xx may pass later; any other answer will be the same next time.
        return Attempt(f"HTTP {status}", retry=status == 429 or status >= 500)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        async with (
            asyncio.timeout(self.total_timeout),
            httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                follow_redirects=False, headers={"user-agent": "backout-notify"},
            ) as client,
        ):  # fmt: skip
            r = await client.post(url, content=body, headers=headers)
            return r.status_code

    def close(self) -> None:
        """Nothing to release: each send has its own client."""


class MailSender:
    """Sends an item as an e-mail through the SMTP server recorded with it (waiting at most
    ``max_timeout`` s for it when given, whatever the policy's timeout)."""

    def __init__(
        self, environ: Mapping[str, str] | None = None, *, max_timeout: float | None = None
    ) -> None:
        self.environ = environ
        self.max_timeout = max_timeout

    def send(self, item: OutboxItem, /) -> Attempt:
        if item.smtp is None:
            return Attempt("no mail server: add notifications.smtp to the model's policy")
        import os

        smtp = item.smtp
        if self.max_timeout is not None and smtp.timeout > self.max_timeout:
            smtp = dataclasses.replace(smtp, timeout=self.max_timeout)
        r = send_mail(smtp, item.notice, item.target, item.id, environ=self.environ or os.environ)
        return Attempt(r.error, r.retry)


class Outbox:
    """Delivers due outbox rows: at least once, with backoff, failures as events."""

    def __init__(
        self,
        store: Store,
        *,
        senders: Mapping[str, Sender] | None = None,
        clock: Clock = system_clock,
        actor: str = "controller",
        max_attempts: int = 8,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        claim_s: float = 30.0,
        batch: int = 50,
        concurrency: int = 4,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.senders: dict[str, Sender] = dict(senders) if senders is not None else {
            "webhook": WebhookSender(), "email": MailSender()}  # fmt: skip
        self.clock = clock
        self.actor = actor
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        # Longer than any send may take: a row claimed by a worker that died is sent again
        # once its claim runs out.
        self.claim_s = claim_s
        self.batch = batch
        self.concurrency = concurrency
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._wake = threading.Event()

    # -- reading ------------------------------------------------------------------------

    def items(self, status: str | None = None) -> list[dict[str, Any]]:
        """The rows (for status and tests), oldest first, recipients redacted."""
        q = sa.select(OB).order_by(OB.c.created_at, OB.c.id)
        if status is not None:
            q = q.where(OB.c.status == status)
        with self.store.read() as conn:
            return [
                {"id": r.id, "model": r.model, "kind": r.kind, "channel": r.channel,
                 "target": redact_target(r.channel, r.target), "status": r.status,
                 "attempts": r.attempts, "next_attempt_at": r.next_attempt_at,
                 "last_error": r.last_error}
                for r in conn.execute(q)
            ]  # fmt: skip

    # -- delivering ---------------------------------------------------------------------

    def wake(self) -> None:
        """Ask the worker to look now (after a commit that enqueued something)."""
        self._wake.set()

    def deliver_due(self, now: float | None = None) -> int:
        """Claim and send every due row (up to ``batch``); how many were attempted."""
        now = self.clock() if now is None else now
        claimed = self._claim(now)
        if len(claimed) <= 1 or self.concurrency <= 1:
            for item in claimed:
                self._send(item)
        else:
            # A few at a time: one receiver that hangs until its timeout must not hold up
            # the notices for every other receiver behind it.
            with ThreadPoolExecutor(min(self.concurrency, len(claimed)), "backout-send") as pool:
                list(pool.map(self._send, claimed))
        return len(claimed)

    def deliver_now(self, ids: Sequence[str], *, within: float) -> list[str]:
        """Deliver these rows now, for a command that queued them and is about to exit.

        Best effort, for about ``within`` s (plus at most one send's own bound): a receiver
        that answers with a retriable error (5xx, 429) is tried again after the usual
        backoff while time remains; one that cannot be reached or does not answer is not
        waited for. Whatever is left stays pending, with its attempts and last error, for
        the delivery worker of ``backout serve`` (and ``backout status`` shows it). Returns
        the ids still pending.
        """
        deadline = time.monotonic() + within
        todo = set(ids)
        while todo and time.monotonic() < deadline:
            for item in self._claim(self.clock(), only=todo):
                result = self._send(item)
                if not result.error or not result.retry or not result.answered:
                    todo.discard(item.id)  # delivered, failed for good, or not worth a wait
            due = self._next_attempts(todo)
            todo = set(due)
            if not due:
                break
            wait = max(0.0, min(due.values()) - self.clock())
            if time.monotonic() + wait >= deadline:
                break
            time.sleep(wait)
        return sorted(self._next_attempts(set(ids)))

    def _next_attempts(self, ids: set[str]) -> dict[str, float]:
        """id -> next attempt time of those of ``ids`` still pending."""
        if not ids:
            return {}
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(OB.c.id, OB.c.next_attempt_at).where(
                    OB.c.id.in_(sorted(ids)), OB.c.status == PENDING
                )
            ).all()
        return {r.id: float(r.next_attempt_at) for r in rows}

    def _send(self, item: OutboxItem) -> Attempt:
        sender = self.senders.get(item.channel)
        if sender is None:
            result = Attempt(f"no sender for channel {item.channel!r}")
        else:
            try:
                result = sender.send(item)
            except Exception as exc:  # a sender must not raise; if one does, it is a failure
                log.exception("sender for %s raised", item.channel)
                result = Attempt(f"{type(exc).__name__}: {exc}", retry=True)
        self._record(item, result)
        return result

    def run(self, stop: threading.Event, *, interval: float = 1.0,
            active: Callable[[], bool] = lambda: True) -> None:  # fmt: skip
        """Deliver until ``stop`` is set, looking every ``interval`` s or when woken; only
        while ``active()`` (the controller holds its lease)."""
        # One line when an outage starts and one when it ends, in the words every other
        # loop of the gateway and the controller uses (store/outage.py).
        outage = Outage(log, "outbox delivery")
        while not stop.is_set():
            try:
                if active():
                    while self.deliver_due() and not stop.is_set():
                        pass
                outage.recovered()
            except Exception as exc:  # a store briefly unreachable must not end the worker
                outage.failed(exc, f"retrying every {interval:g} s")
            self._wake.wait(interval)
            self._wake.clear()

    def close(self) -> None:
        for sender in self.senders.values():
            close = getattr(sender, "close", None)
            if callable(close):
                close()

    def _claim(self, now: float, *, only: set[str] | None = None) -> list[OutboxItem]:
        with self.store.write() as conn:
            q = (
                sa.select(OB)
                .where(OB.c.status == PENDING, OB.c.next_attempt_at <= now)
                .order_by(OB.c.next_attempt_at, OB.c.created_at)
                .limit(self.batch)
            )
            if only is not None:
                q = q.where(OB.c.id.in_(sorted(only)))
            rows = conn.execute(q).all()
            for r in rows:
                conn.execute(
                    OB.update().where(OB.c.id == r.id).values(
                        attempts=r.attempts + 1, next_attempt_at=now + self.claim_s)
                )  # fmt: skip
        return [_item(r, r.attempts + 1) for r in rows]

    def _record(self, item: OutboxItem, result: Attempt) -> None:
        now = self.clock()
        with self.store.write() as conn:
            if not result.error:
                conn.execute(OB.update().where(OB.c.id == item.id).values(
                    status=DELIVERED, done_at=now, last_error=""))  # fmt: skip
                return
            if result.retry and item.attempts < self.max_attempts:
                at = now + self._delay(item.attempts)
                conn.execute(OB.update().where(OB.c.id == item.id).values(
                    next_attempt_at=at, last_error=result.error))  # fmt: skip
                log.info("delivery %s to %s failed (%s); retrying in %.1f s",
                         item.id, item.redacted, result.error, at - now)  # fmt: skip
                return
            conn.execute(OB.update().where(OB.c.id == item.id).values(
                status=FAILED, done_at=now, last_error=result.error))  # fmt: skip
            _failed_event(conn, item.id, item.notice, item.channel, item.target, item.attempts,
                          result.error, self.actor, now)  # fmt: skip
        log.warning("delivery %s to %s failed for good: %s", item.id, item.redacted, result.error)

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, so that many workers
        retrying the same receiver spread out."""
        base = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        with self._rng_lock:
            jitter = self._rng.random()
        return base / 2 + jitter * base / 2


def _item(r: Any, attempts: int) -> OutboxItem:
    doc = r.notice if isinstance(r.notice, dict) else orjson.loads(r.notice)
    smtp = doc.get("smtp")
    return OutboxItem(
        id=r.id,
        model=r.model,
        channel=r.channel,
        target=r.target,
        notice=Notice.from_dict(doc["notice"]),
        smtp=SmtpSettings.from_dict(smtp) if smtp else None,
        attempts=attempts,
        created_at=float(r.created_at),
    )
