"""Refused attempts in the audit log, at a bounded rate.

For :mod:`backout.api.auth`. Every refusal is audited (``access.unauthenticated``,
``access.denied``), but a client without credentials can send as many requests as it
likes, and writing one hash-chained event for each would let anyone grow the log (and take
the store's write lock) at will. So refusals are grouped by *who and why* — the client's
address and the kind of credential refused, or the principal, the route and the right —
into windows of ``interval`` seconds: the first refusal of a window is written at once, as
before, and the repeats are counted and written as one event at the window's end, with
their number, their first and last time and a few example routes. The number of open
windows is bounded too (past ``max_keys``, new sources share one window per kind).

:meth:`Attempts.flush` writes the windows that ended (the API calls it every few seconds
and once more when it stops).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from backout.errors import StoreUnavailable
from backout.store import Store, audit

__all__ = ["Attempts"]

log = logging.getLogger("backout.api")

EXAMPLES = 5  # routes (and token ids) kept as examples in a window's summary


@dataclass
class _Window:
    kind: str
    model: str | None
    actor: str
    source: str
    started: float
    last: float = 0.0
    repeats: int = 0
    last_reason: str = ""
    routes: list[str] = field(default_factory=list)
    token_ids: list[str] = field(default_factory=list)

    def add(self, at: float, reason: str, data: dict[str, Any]) -> None:
        self.repeats += 1
        self.last = at
        self.last_reason = reason
        route, tid = data.get("route"), data.get("token_id")
        if isinstance(route, str) and route not in self.routes and len(self.routes) < EXAMPLES:
            self.routes.append(route)
        if isinstance(tid, str) and tid not in self.token_ids and len(self.token_ids) < EXAMPLES:
            self.token_ids.append(tid)


class Attempts:
    """The refusals of one API process, grouped into windows before they reach the log."""

    def __init__(self, store: Store, *, interval: float = 60.0, max_keys: int = 1000,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.store = store
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._open: dict[Hashable, _Window] = {}
        self._lock = threading.Lock()

    def record(self, kind: str, key: Hashable, *, source: str, model: str | None, actor: str,
               reason: str, data: dict[str, Any]) -> bool:  # fmt: skip
        """Audit one refusal grouped under ``key``; True when it was written at once (the
        first of its window), False when it was counted for the window's summary."""
        now = self.clock()
        ended: list[_Window] = []
        with self._lock:
            full = (kind, key) not in self._open and len(self._open) >= self.max_keys
            k: Hashable = (kind, "*") if full else (kind, key)
            w = self._open.get(k)
            if w is not None and now - w.started >= self.interval:
                ended.append(self._open.pop(k))
                w = None
            if w is not None:
                w.add(now, reason, data)
            else:
                self._open[k] = _Window(kind, model, actor, "*" if full else source, now, now)
        for old in ended:
            self._summarise(old)
        if w is not None:
            return False
        self._write(kind, model, actor, reason, data | {"source": source})
        return True

    def flush(self, *, everything: bool = False) -> int:
        """Write the summary of every window that ended (``everything``: of all of them);
        the number of summaries written."""
        now = self.clock()
        with self._lock:
            done = [
                k for k, w in self._open.items() if everything or now - w.started >= self.interval
            ]
            ended = [self._open.pop(k) for k in done]
        written = 0
        for w in ended:
            written += self._summarise(w)
        return written

    def _summarise(self, w: _Window) -> int:
        if not w.repeats:
            return 0
        span = max(0.0, w.last - w.started)
        reason = (f"{w.repeats} more refused attempt(s) like the one before from {w.source} "
                  f"in {span:.0f} s; the last: {w.last_reason}")  # fmt: skip
        data: dict[str, Any] = {"source": w.source, "repeats": w.repeats, "first_at": w.started,
                                "last_at": w.last, "routes": w.routes}  # fmt: skip
        if w.token_ids:
            data["token_ids"] = w.token_ids
        self._write(w.kind, w.model, w.actor, reason, data)
        return 1

    def _write(self, kind: str, model: str | None, actor: str, reason: str,
               data: dict[str, Any]) -> None:  # fmt: skip
        try:
            with self.store.write() as conn:
                audit.append(conn, kind, model=model, actor=actor, reason=reason, data=data)
        except StoreUnavailable as exc:  # the refusal stands even if it cannot be recorded
            log.warning("could not record %s by %s: %s", kind, actor, exc)
