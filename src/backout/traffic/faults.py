"""Faults: what a router does on purpose to one release's requests during a drill.

A fault (added latency, a share of errors or NaN outputs, a crash) is a row the gateway's
workers read with their route tables, so a drill exercises the same path a real incident
takes. Only a router that declares the ``fault-injection`` capability can carry one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from backout.errors import ConfigError
from backout.store import schema

F = schema.faults

FAULT_KINDS = ("latency", "errors", "nan", "crash")
_SPEC = re.compile(r"^(latency|errors|nan|crash)(?:=\+?([0-9.]+)(ms|s|%)?)?$")


@dataclass(frozen=True, slots=True)
class Fault:
    """What a gateway does to one release's requests while the fault is active."""

    kind: str  # latency | errors | nan | crash
    value: float  # latency: seconds added; errors and nan: share of requests hit; crash: 1
    start_at: float = 0.0
    end_at: float = float("inf")

    def active(self, now: float) -> bool:
        return self.start_at <= now < self.end_at

    @property
    def label(self) -> str:
        if self.kind == "latency":
            return f"latency=+{self.value * 1000:g}ms"
        if self.kind == "crash":
            return "crash"
        return f"{self.kind}={self.value * 100:g}%"


def parse_fault(spec: str) -> Fault:
    """``latency=+200ms``, ``errors=5%``, ``nan=1%`` or ``crash``."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise ConfigError(f"fault {spec!r} is not one of latency=+200ms, errors=5%, nan=1%, crash")
    kind, number, unit = m.groups()
    if kind == "crash":
        if number is not None:
            raise ConfigError("the crash fault takes no value: write --fault crash")
        return Fault("crash", 1.0)
    if number is None:
        raise ConfigError(
            f"fault {kind} needs a value, e.g. {'latency=+200ms' if kind == 'latency' else kind + '=5%'}"
        )
    value = float(number)
    if kind == "latency":
        if unit not in ("ms", "s"):
            raise ConfigError(f"latency fault {spec!r} needs a unit: ms or s (e.g. latency=+200ms)")
        return Fault("latency", value / 1000 if unit == "ms" else value)
    if unit != "%" or not 0 < value <= 100:
        raise ConfigError(f"{kind} fault {spec!r} must be a percentage in (0, 100], e.g. {kind}=5%")
    return Fault(kind, value / 100)


def active_faults(conn: Any, now: float) -> dict[tuple[str, str], Fault]:
    """Faults that are or will be active, per (model, version), for the gateway's state."""
    rows = conn.execute(sa.select(F).where(F.c.end_at > now))
    return {(r.model, r.version): Fault(r.kind, r.value, r.start_at, r.end_at) for r in rows}
