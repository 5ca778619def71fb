"""Shared aliases and small protocols that several layers name. Nothing here does I/O."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds since the epoch as a float: the one notion of "now" a process shares.

    The controller, the registry's known-good marks and the audit log read the same clock,
    so a test that moves a fake clock moves all of them together.
    """

    def __call__(self) -> float: ...


def system_clock() -> float:
    """The wall clock (``time.time``): the default :class:`Clock`."""
    return time.time()
