"""Notifications and escalation: tell people what the controller did, without ever slowing it.

For the controller (which sends a :class:`Notice` on a trigger, every phase change, an abort,
a freeze, an escalation and a completion) and for the on-call engineer who reads them in
Slack or any tool that takes Slack-compatible webhooks.

A :class:`Notifier` is the boundary: :class:`WebhookNotifier` posts JSON from a background
thread, :class:`InMemoryNotifier` records notices for tests, :class:`MultiNotifier` fans out.
``send`` never blocks and never raises: a webhook that is down, slow or wrong must not delay
a rollback by a millisecond. Deliveries that fail for good (after bounded retries with
exponential backoff and jitter on timeouts, connection errors, 429 and 5xx; at once on other
answers) are kept in ``failures`` and passed to ``on_failure``, so the controller can record
them as events.

:class:`Escalator` is the pure arithmetic of escalation: which contact is due now.

The controller itself does not post from memory: it queues its notices in the store's
outbox (:mod:`backout.control.outbox`), which survives a crash; a :class:`Notifier` given to
it (tests, dry runs) replaces the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import httpx
import orjson

from backout import redaction
from backout.control.policy import Contact, Escalation, NoticeKind, Policy
from backout.redaction import redact_text

__all__ = [
    "Escalator",
    "FailedDelivery",
    "InMemoryNotifier",
    "MultiNotifier",
    "Notice",
    "NoticeKind",
    "Notifier",
    "Severity",
    "WebhookNotifier",
    "notifier_for",
    "redact_url",
]

log = logging.getLogger("backout.notify")

FieldValue = str | int | float | bool | None


class Severity(StrEnum):
    """How urgent a notice is."""

    INFO = "info"  # progress: a phase change, a completion
    WARNING = "warning"  # something went wrong and is being handled: a trigger, a rollback
    CRITICAL = "critical"  # people must act: a freeze, an abort, an escalation


_ICON = {Severity.INFO: ":information_source:", Severity.WARNING: ":warning:"}
_ICON[Severity.CRITICAL] = ":rotating_light:"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification: what happened to which model, for people and for machines."""

    kind: NoticeKind
    model: str
    title: str
    text: str = ""
    severity: Severity = Severity.INFO
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    at: datetime = field(default_factory=_now)
    incident: str | None = None
    # Extra webhooks that get this notice whatever a notifier's kinds (an escalation
    # contact). Routing, not content: it never appears in the payload, as webhook URLs are
    # secrets.
    to: tuple[str, ...] = ()
    # E-mail addresses that get this notice (an escalation contact's), sent over the
    # policy's SMTP server by the outbox. Routing too: never in the payload.
    mail: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Notice:
        """The notice :meth:`to_dict` wrote (routing fields are not part of it)."""
        return cls(
            kind=NoticeKind(d["kind"]),
            model=d["model"],
            title=d["title"],
            text=d.get("text", ""),
            severity=Severity(d.get("severity", "info")),
            fields=dict(d.get("fields") or {}),
            at=datetime.fromisoformat(d["at"]),
            incident=d.get("incident"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The structured notice (the ``backout`` key of the payload)."""
        return {
            "kind": self.kind.value,
            "model": self.model,
            "title": self.title,
            "text": self.text,
            "severity": self.severity.value,
            "fields": dict(self.fields),
            "at": self.at.isoformat(),
            "incident": self.incident,
        }

    def payload(self, delivery_id: str | None = None) -> dict[str, Any]:
        """Slack-compatible JSON: ``text`` (the fallback), ``blocks``, and ``backout``
        (with ``id``, the delivery's idempotency key, when it has one)."""
        icon = _ICON[self.severity]
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": self.title[:150]}},
        ]
        if self.text:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": self.text}})
        if self.fields:
            cells = [
                {"type": "mrkdwn", "text": f"*{k}*\n{_cell(v)}"} for k, v in self.fields.items()
            ]
            blocks += [{"type": "section", "fields": cells[i : i + 10]} for i in range(0, len(cells), 10)]  # fmt: skip
        context = f"{icon} {self.severity.value} · {self.kind.value} · model `{self.model}`"
        if self.incident:
            context += f" · incident `{self.incident}`"
        context += f" · {self.at.strftime('%Y-%m-%d %H:%M:%S %Z')}"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
        text = f"{icon} [{self.model}] {self.title}" + (f": {self.text}" if self.text else "")
        body = self.to_dict()
        if delivery_id is not None:
            body["id"] = delivery_id
        return {"text": text, "blocks": blocks, "backout": body}


def _cell(value: FieldValue) -> str:
    return "—" if value is None else str(value)


def redact_url(url: str) -> str:
    """A webhook URL fit for logs and events: scheme and host only, as the path of a Slack
    webhook is its secret (the one redaction, :mod:`backout.redaction`, for webhooks)."""
    return redaction.redact_url(url, keep_path=False)


@dataclass(frozen=True, slots=True)
class FailedDelivery:
    """A notice that did not reach a webhook, and why (ready to record as an event)."""

    target: str  # the webhook, redacted
    kind: NoticeKind
    model: str
    title: str
    incident: str | None
    attempts: int  # 0: never tried (queue full, or the notifier was closed)
    error: str
    at: datetime = field(default_factory=_now)

    @property
    def summary(self) -> str:
        return (
            f"notification {self.kind.value} {self.title!r} to {self.target} failed after "
            f"{self.attempts} attempt(s): {self.error}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind.value,
            "model": self.model,
            "title": self.title,
            "incident": self.incident,
            "attempts": self.attempts,
            "error": self.error,
            "at": self.at.isoformat(),
            "summary": self.summary,
        }


class Notifier(Protocol):
    """Where notices go. ``send`` returns at once and never raises."""

    def send(self, notice: Notice, /) -> None:
        """Queue ``notice`` for delivery."""

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued (waiting at most ``timeout`` s); True if all went out."""


class InMemoryNotifier:
    """Keeps every notice it is sent, in order: the notifier of tests and dry runs."""

    def __init__(self, kinds: Collection[NoticeKind] | None = None) -> None:
        self.kinds = frozenset(kinds) if kinds is not None else None
        self.notices: list[Notice] = []
        self.closed = False
        self._lock = threading.Lock()

    def send(self, notice: Notice, /) -> None:
        if self.kinds is None or notice.kind in self.kinds or notice.to:
            with self._lock:
                self.notices.append(notice)

    def close(self, timeout: float = 5.0) -> bool:
        self.closed = True
        return True

    def of_kind(self, kind: NoticeKind) -> list[Notice]:
        """The notices of one kind, in order."""
        with self._lock:
            return [n for n in self.notices if n.kind == kind]


class MultiNotifier:
    """Sends every notice to each of several notifiers; one that misbehaves cannot stop the
    others."""

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self.notifiers = list(notifiers)

    def send(self, notice: Notice, /) -> None:
        for n in self.notifiers:
            try:
                n.send(notice)
            except Exception:  # a notifier must not raise; if one does, the rest still hear
                log.exception("notifier %r raised on send", n)

    def close(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        ok = True
        for n in self.notifiers:
            try:
                ok = n.close(max(deadline - time.monotonic(), 0.0)) and ok
            except Exception:
                log.exception("notifier %r raised on close", n)
                ok = False
        return ok


@dataclass(slots=True)
class _Job:
    """One notice on its way to one webhook."""

    url: str
    notice: Notice
    attempts: int = 0
    error: str = ""


class WebhookNotifier:
    """Posts notices as Slack-compatible JSON to webhooks, from a background thread.

    ``urls`` get the notices whose kind is in ``kinds`` (all when None); a notice's own
    ``to`` webhooks get it whatever its kind. Every attempt is bounded: ``connect_timeout``
    to connect, ``timeout`` for each read or write, ``total_timeout`` (default twice
    ``timeout``) for the whole attempt, so a receiver that trickles bytes cannot hold it. At most ``max_pending`` deliveries wait at
    once; beyond that a delivery is dropped and reported, never queued behind the caller.
    ``on_failure`` is called (from the worker thread, or the caller's when dropping) with
    every :class:`FailedDelivery`; it must be quick and must not raise.
    """

    def __init__(
        self,
        urls: Sequence[str] = (),
        *,
        kinds: Collection[NoticeKind] | None = None,
        timeout: float = 2.0,
        connect_timeout: float = 1.0,
        total_timeout: float | None = None,
        max_attempts: int = 4,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        max_pending: int = 1000,
        on_failure: Callable[[FailedDelivery], None] | None = None,
        seed: int | None = None,
    ) -> None:
        self.urls = tuple(urls)
        self.kinds = frozenset(kinds) if kinds is not None else None
        self.timeout = timeout  # each connect, write and read
        self.total_timeout = total_timeout or 2 * timeout  # one whole attempt
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_pending = max_pending
        self.on_failure = on_failure
        self.delivered = 0  # deliveries that got a 2xx answer
        self._failures: deque[FailedDelivery] = deque(maxlen=1000)
        self._rng = random.Random(seed)
        self._cond = threading.Condition()
        self._pending = 0
        self._closed = False
        self._stopped = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
            follow_redirects=False,
            headers={"user-agent": "backout-notify"},
        )
        self._thread = threading.Thread(target=self._run, name="backout-notify", daemon=True)
        self._thread.start()

    # --- the caller's side (any thread) ---

    def send(self, notice: Notice, /) -> None:
        """Queue ``notice`` for its webhooks and return at once."""
        wanted = self.kinds is None or notice.kind in self.kinds
        for url in dict.fromkeys([*(self.urls if wanted else ()), *notice.to]):
            with self._cond:
                reason = "notifier closed" if self._closed else ""
                if not reason and self._pending >= self.max_pending:
                    reason = f"more than {self.max_pending} deliveries waiting"
                if not reason:
                    self._pending += 1
            if not reason:
                try:
                    self._loop.call_soon_threadsafe(self._start, _Job(url, notice))
                    continue
                except RuntimeError:  # the loop closed between the check and now
                    with self._cond:
                        self._pending -= 1
                    reason = "notifier closed"
            self._fail(url, notice, 0, f"dropped: {reason}")

    def close(self, timeout: float = 5.0) -> bool:
        """Stop taking notices, deliver what is queued within ``timeout`` s, then stop the
        worker; deliveries still running are cancelled and reported. True if all went out."""
        with self._cond:
            self._closed = True
            drained = self._cond.wait_for(lambda: self._pending == 0, timeout)
            if self._stopped:
                return drained
            self._stopped = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        return drained

    def __enter__(self) -> WebhookNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def failures(self) -> list[FailedDelivery]:
        """Deliveries that failed for good, oldest first (the last 1000)."""
        with self._cond:
            return list(self._failures)

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    # --- the worker's side ---

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            for task in self._tasks:
                task.cancel()
            pending = asyncio.gather(*self._tasks, return_exceptions=True)
            self._loop.run_until_complete(pending)
            self._loop.run_until_complete(self._client.aclose())
            self._loop.close()

    def _start(self, job: _Job) -> None:
        task = self._loop.create_task(self._deliver(job))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(job, t))

    async def _deliver(self, job: _Job) -> None:
        body = orjson.dumps(job.notice.payload())
        while job.attempts < self.max_attempts:
            if job.attempts:
                await asyncio.sleep(self._delay(job.attempts))
            job.attempts += 1
            retry, job.error = await self._post(job.url, body)
            if not job.error:
                with self._cond:
                    self.delivered += 1
                return
            if not retry:
                break
        self._fail(job.url, job.notice, job.attempts, job.error)

    def _finished(self, job: _Job, task: asyncio.Task[None]) -> None:
        """Every delivery ends here, even one cancelled before it started."""
        self._tasks.discard(task)
        if task.cancelled():
            why = f"not delivered before close ({job.error or 'no answer'})"
            self._fail(job.url, job.notice, job.attempts, why)
        elif (exc := task.exception()) is not None:  # a payload or URL httpx cannot take
            why = f"{type(exc).__name__}: {redact_text(str(exc))}"
            self._fail(job.url, job.notice, job.attempts, why)
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    async def _post(self, url: str, body: bytes) -> tuple[bool, str]:
        """(worth retrying, error); the error is empty on success."""
        try:
            # httpx bounds each connect and read; this bounds the whole attempt, so a
            # receiver that trickles its answer cannot hold a delivery past ``timeout``.
            async with asyncio.timeout(self.total_timeout):
                r = await self._client.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
        except httpx.TimeoutException:
            return True, f"no answer within {self.timeout:g}s"
        except TimeoutError:
            return True, f"no whole answer within {self.total_timeout:g}s"
        except httpx.TransportError as exc:
            return True, f"connection failed: {redact_text(str(exc)) or type(exc).__name__}"
        if r.is_success:
            return False, ""
        # 429 and 5xx may pass later; any other answer will be the same next time.
        return r.status_code == 429 or r.status_code >= 500, f"HTTP {r.status_code}"

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, so that many notifiers
        retrying the same receiver spread out."""
        base = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return base / 2 + self._rng.random() * base / 2

    def _fail(self, url: str, notice: Notice, attempts: int, error: str) -> None:
        failed = FailedDelivery(
            redact_url(url), notice.kind, notice.model, notice.title, notice.incident,
            attempts, error,
        )  # fmt: skip
        log.warning("%s", failed.summary)
        with self._cond:
            self._failures.append(failed)
        if self.on_failure is not None:
            try:
                self.on_failure(failed)
            except Exception:
                log.exception("on_failure callback raised")


def notifier_for(
    policy: Policy, *, on_failure: Callable[[FailedDelivery], None] | None = None
) -> WebhookNotifier:
    """The webhook notifier a policy asks for: its webhooks, for the kinds in ``on``."""
    n = policy.notifications
    return WebhookNotifier(n.webhooks, kinds=n.on, on_failure=on_failure)


def _seconds(t: float | datetime) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


class Escalator:
    """Who to call next when recovery is late: the pure arithmetic, called on every tick.

    Contact ``k`` (0-based) is due ``(k + 1) * after`` after the incident started: the
    notifications' webhooks hear about the incident at once; the first contact is called
    when recovery is not complete within ``after``. With ``repeat`` the list starts again
    after its last contact; without, escalation stops there.
    """

    def __init__(self, escalation: Escalation) -> None:
        self.escalation = escalation

    def contact(self, level: int) -> Contact | None:
        """The contact at escalation ``level`` (0-based), or None past the end."""
        contacts = self.escalation.contacts
        if not contacts or level < 0:
            return None
        if level >= len(contacts) and not self.escalation.repeat:
            return None
        return contacts[level % len(contacts)]

    def due_at(self, started_at: float | datetime, level: int) -> float | None:
        """When ``level`` falls due (epoch seconds), or None if there is no such level."""
        if self.contact(level) is None:
            return None
        return _seconds(started_at) + (level + 1) * self.escalation.after

    def due(
        self, started_at: float | datetime, now: float | datetime, notified_levels: int
    ) -> Contact | None:
        """The next contact to call now, given ``notified_levels`` contacts already called,
        or None. One at a time: a controller that was down catches up one level per tick."""
        at = self.due_at(started_at, notified_levels)
        return self.contact(notified_levels) if at is not None and _seconds(now) >= at else None

    def notice(
        self,
        level: int,
        *,
        model: str,
        started_at: float | datetime,
        now: float | datetime,
        incident: str | None = None,
        reason: str = "recovery is not complete",
    ) -> Notice:
        """The escalation notice for ``level``, addressed to its contact's webhook."""
        contact = self.contact(level)
        if contact is None:
            raise ValueError(f"no escalation contact at level {level}")
        waited = _seconds(now) - _seconds(started_at)
        return Notice(
            kind=NoticeKind.ESCALATION,
            model=model,
            title=f"Escalation to {contact.name}: {model} {reason} after {waited:.0f}s",
            text=f"{reason} after {waited:.0f}s; escalating to level {level + 1}.",
            severity=Severity.CRITICAL,
            fields={"contact": contact.name, "email": contact.email, "level": level + 1},
            incident=incident,
            to=(contact.webhook,) if contact.webhook else (),
            mail=(contact.email,) if contact.email else (),
        )
