"""Outages: how a loop that keeps retrying the store reports a fault once, not every time.

For the gateway workers' route poll and telemetry flush and the controller's loop: each
owns an :class:`Outage` and calls :meth:`Outage.failed` on every failed attempt and
:meth:`Outage.recovered` on every good one. A fault writes one log line when it starts (a
traceback only when it is not one of backout's own errors, that is a bug) and one when it
ends, saying how long it lasted and how many attempts failed, whether it lasted a second or
an hour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from backout.errors import BackoutError
from backout.redaction import redact_text


def one_line(exc: BaseException) -> str:
    """An exception as one redacted line: its message, else its type's name."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return redact_text(first)


class Outage:
    """The state of one loop's fault: when it began, how many attempts failed, and why."""

    def __init__(
        self, log: logging.Logger, what: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.log = log
        self.what = what  # e.g. "route refresh (serving generation 12)"
        self.clock = clock
        self.since: float | None = None  # monotonic start of the current fault
        self.failures = 0  # failed attempts in the current fault
        self.kind: type[BaseException] | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, detail: str = "") -> bool:
        """Record a failed attempt; True (and one log line) when it starts a new fault."""
        self.failures += 1
        if self.since is not None and type(exc) is self.kind:
            return False
        new = self.since is None
        if new:
            self.since = self.clock()
        self.kind = type(exc)
        bug = not isinstance(exc, BackoutError)
        self.log.warning(
            "%s failed: %s%s; %s",
            self.what, one_line(exc), f" ({detail})" if detail else "",
            "retrying quietly until it recovers" if new else "the fault changed",
            exc_info=exc if bug else None,
        )  # fmt: skip
        return True

    def recovered(self, detail: str = "") -> bool:
        """Record a good attempt; True (and one log line) when it ends a fault."""
        if self.since is None:
            return False
        lasted = self.clock() - self.since
        self.log.warning(
            "%s recovered after %.1f s and %d failed attempt(s)%s",
            self.what, lasted, self.failures, f" ({detail})" if detail else "",
        )  # fmt: skip
        self.since, self.failures, self.kind = None, 0, None
        return True
