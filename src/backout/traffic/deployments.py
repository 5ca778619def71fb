"""Deployments: the live route table of each model, written atomically to the store.

Every change writes a whole new :class:`~backout.traffic.routes.RouteTable` with the next
generation, bumps the store-wide routes generation (what gateway workers poll), marks the
releases that now answer production traffic as served, and appends an event, all in one
transaction. The gateway never sees half a change.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.errors import InvalidTraffic, ModelNotFound
from backout.registry.manifest import check_model_name, check_version
from backout.registry.releases import Registry
from backout.store import Store, audit, bump_generation, read_generation, schema
from backout.traffic.livestate import CaptureRule, LiveState, read_live_state
from backout.traffic.routes import BUCKETS, RouteTable, Shadow, percent_to_bp, reassign

__all__ = ["CaptureRule", "Deployments", "LiveState", "describe"]

D = schema.deployments


class Deployments:
    """Reads and writes route tables."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    # -- reading -----------------------------------------------------------------------

    def get(self, model: str) -> RouteTable | None:
        with self.store.read() as conn:
            return self._get(conn, model)

    def require(self, model: str) -> RouteTable:
        table = self.get(model)
        if table is None:
            live = ", ".join(self.models()) or "none"
            raise ModelNotFound(
                f"model {model!r} has no live traffic (live models: {live}): "
                f"start it with `backout deploy {model}@VERSION`"
            )
        return table

    def models(self) -> list[str]:
        with self.store.read() as conn:
            return list(conn.execute(sa.select(D.c.model).order_by(D.c.model)).scalars())

    def generation(self) -> int:
        """The store-wide routes generation: changes whenever any route table changes."""
        with self.store.read() as conn:
            return read_generation(conn)

    def live_state(self) -> LiveState:
        """Everything a gateway worker routes by, read in one consistent snapshot."""
        with self.store.read() as conn:
            return read_live_state(conn)

    # -- writing -----------------------------------------------------------------------

    def set_traffic(
        self,
        model: str,
        weights: Mapping[str, float],
        *,
        shadow: tuple[str, float] | None = None,
        pins: Mapping[str, str] | None = None,
        actor: str,
        reason: str = "",
        kind: str = "traffic.set",
        data: Mapping[str, Any] | None = None,
        verify: bool = True,
        conn: Connection | None = None,
    ) -> RouteTable:
        """Write a new route table for ``model``: ``weights`` in percent, summing to 100.

        Every named release must be registered, not quarantined and (unless ``verify`` is
        False, for callers that verified already) pass ``registry.verify``. Pins and the
        shadow keep their previous values unless given.
        """
        bp = self.check_traffic(model, weights, shadow=shadow, pins=pins, verify=verify)
        if conn is not None:
            return self._write(conn, model, bp, shadow, pins, actor, reason, kind, data)
        with self.store.write() as c:
            return self._write(c, model, bp, shadow, pins, actor, reason, kind, data)

    def check_traffic(
        self,
        model: str,
        weights: Mapping[str, float],
        *,
        shadow: tuple[str, float] | None = None,
        pins: Mapping[str, str] | None = None,
        verify: bool = True,
    ) -> dict[str, int]:
        """Validate a route change without writing it; the weights in basis points.

        Raises :class:`InvalidTraffic` (or the registry's errors) exactly as
        :meth:`set_traffic` would, so a caller can refuse bad input before acting on it.
        """
        check_model_name(model)
        bp = {check_version(v): percent_to_bp(p) for v, p in weights.items()}
        if sum(bp.values()) != BUCKETS:
            shown = ", ".join(f"{v}={p:g}%" for v, p in weights.items())
            raise InvalidTraffic(
                f"weights must sum to 100% but {shown} sum to {sum(bp.values()) / 100:g}%"
            )
        bp = {v: w for v, w in bp.items() if w > 0}
        named = set(bp) | set((pins or {}).values()) | ({shadow[0]} if shadow else set())
        for version in sorted(named):
            self._check_usable(model, version, verify=verify)
        return bp

    def _write(
        self,
        conn: Connection,
        model: str,
        bp: dict[str, int],
        shadow: tuple[str, float] | None,
        pins: Mapping[str, str] | None,
        actor: str,
        reason: str,
        kind: str,
        data: Mapping[str, Any] | None,
    ) -> RouteTable:
        old = self._get(conn, model)
        ranges = reassign(old.ranges if old else {}, bp)
        if shadow is not None:
            sh = Shadow(shadow[0], percent_to_bp(shadow[1])) if shadow[1] > 0 else None
        else:
            sh = old.shadow if old else None
        if sh is not None and sh.version in bp:
            raise InvalidTraffic(
                f"{model}@{sh.version} cannot both take live traffic and be the shadow"
            )
        table = RouteTable(
            model=model,
            generation=(old.generation + 1) if old else 1,
            ranges=ranges,
            shadow=sh,
            pins=dict(pins) if pins is not None else (dict(old.pins) if old else {}),
        )
        now = datetime.fromtimestamp(self.registry.clock(), UTC)
        row = {"generation": table.generation, "routes": table.to_dict(), "updated_at": now,
               "updated_by": actor}  # fmt: skip
        if old is None:
            conn.execute(D.insert().values(model=model, **row))
        else:
            conn.execute(D.update().where(D.c.model == model).values(**row))
        bump_generation(conn)
        Registry.mark_served(conn, model, sorted(set(bp) | set(table.pins.values())))
        audit.append(
            conn, kind, model=model, actor=actor,
            reason=reason or describe(table),
            data={"weights": {v: w / 100 for v, w in table.weights.items()},
                  "shadow": table.to_dict()["shadow"], "pins": dict(table.pins),
                  "generation": table.generation, **(data or {})},
            at=now,
        )  # fmt: skip
        return table

    def _check_usable(self, model: str, version: str, *, verify: bool) -> None:
        rel = self.registry.get(f"{model}@{version}")
        if rel.quarantined:
            raise InvalidTraffic(
                f"{rel.ref} is quarantined ({rel.quarantined}) and cannot take traffic"
            )
        if verify:
            report = self.registry.verify(rel.ref)
            if not report.ok:
                raise InvalidTraffic(
                    f"{rel.ref} failed verification and cannot take traffic: {report.problems[0]}"
                )

    @staticmethod
    def _get(conn: Connection, model: str) -> RouteTable | None:
        row = conn.execute(sa.select(D.c.routes).where(D.c.model == model)).first()
        return RouteTable.from_dict(row.routes) if row else None


def describe(table: RouteTable) -> str:
    """One line: ``fraud: 1.4.0=90% 1.5.0=10% shadow 1.6.0 at 5%``."""
    parts = [f"{v}={w / 100:g}%" for v, w in sorted(table.weights.items(), key=lambda kv: -kv[1])]
    if table.shadow:
        parts.append(f"shadow {table.shadow.version} at {table.shadow.basis_points / 100:g}%")
    if table.pins:
        parts.append(f"{len(table.pins)} pin(s)")
    return f"{table.model}: " + " ".join(parts)
