"""One log line per fault: when a background task starts failing, and when it recovers.

For the gateway's background loops (the route refresh, the telemetry flush): they retry
every poll or flush, and a store outage of ten seconds must not write a traceback per
attempt. :class:`FaultLog` writes one line when a fault starts (with the traceback only for
an unexpected exception), one more only when the fault changes kind, and one when the task
works again, saying how long the fault lasted and how many attempts failed.
"""

from __future__ import annotations

import logging
import time

from backout.errors import BackoutError


class FaultLog:
    """The log of one background task's faults, one line per fault."""

    def __init__(self, logger: logging.Logger, task: str) -> None:
        self.logger = logger
        self.task = task
        self.failures = 0  # failed attempts in the current fault
        self._since: float | None = None  # monotonic time the current fault started
        self._kind: str | None = None

    @property
    def failing(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, consequence: str = "") -> None:
        """Record one failed attempt; logs only when a fault starts or changes kind."""
        self.failures += 1
        known = isinstance(exc, BackoutError)
        kind = type(exc).__qualname__
        if self._since is not None and kind == self._kind:
            return
        message = exc.message if isinstance(exc, BackoutError) else f"{kind}: {exc}"
        verb = "failed" if self._since is None else "still failing, now"
        tail = f"; {consequence}" if consequence else ""
        # A domain error says what is wrong and how to fix it; anything else is a bug, whose
        # traceback is worth its lines once.
        self.logger.error(
            "%s %s: %s%s", self.task, verb, message, tail, exc_info=None if known else exc
        )
        if self._since is None:
            self._since = time.monotonic()
        self._kind = kind

    def ok(self) -> None:
        """Record a successful attempt; logs the recovery when a fault was running."""
        if self._since is None:
            return
        lasted = time.monotonic() - self._since
        self.logger.warning(
            "%s works again after %.1f s and %d failed attempts", self.task, lasted, self.failures
        )
        self._since = None
        self._kind = None
        self.failures = 0
