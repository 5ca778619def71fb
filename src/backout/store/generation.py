"""The routes generation: one number that changes whenever anything a gateway routes by changes.

Gateways compare it to the one they hold (SQLite: ``PRAGMA data_version`` tells them to
look; PostgreSQL: a ``backout_routes`` notification) and reload their route table when it
moved.

On PostgreSQL the notification of a write made through :meth:`Store.write` is sent as the
write's last statement, so it can carry the state the write leaves behind: a higher layer
registers a *route-state payload* (:func:`set_routes_payload`) that reads everything a
gateway routes by on the writing connection, and gateways apply it without reading the store
themselves. A payload that is missing or too large for a notification falls back to the
generation alone (gateways then read the state).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.store import schema

log = logging.getLogger("backout.store")

ROUTES_GENERATION = "routes.generation"
ROUTES_CHANNEL = "backout_routes"
# PostgreSQL refuses a notification payload of 8000 bytes or more.
NOTIFY_PAYLOAD_LIMIT = 7999
_PENDING = "backout_routes_pending"  # in Connection.info: the generation to announce

RoutesPayload = Callable[[Connection, int], str | None]
_payload: list[RoutesPayload] = []


def set_routes_payload(builder: RoutesPayload | None) -> None:
    """Announce route changes with ``builder(conn, generation)`` (the state as a string, or
    None for the generation alone) instead of the bare generation; None: the bare one."""
    _payload[:] = [builder] if builder is not None else []


def routes_payload() -> RoutesPayload | None:
    """The builder :func:`set_routes_payload` installed, if any."""
    return _payload[0] if _payload else None


def read_generation(conn: Connection) -> int:
    """The routes generation: it changes whenever anything a gateway routes by changes."""
    M = schema.meta
    n = conn.execute(sa.select(M.c.number).where(M.c.key == ROUTES_GENERATION)).scalar()
    return int(n or 0)


def bump_generation(conn: Connection) -> int:
    """Advance the routes generation (inside a write) so every gateway worker reloads."""
    M = schema.meta
    current = conn.execute(sa.select(M.c.number).where(M.c.key == ROUTES_GENERATION)).scalar()
    if current is None:
        conn.execute(M.insert().values(key=ROUTES_GENERATION, value="", number=1))
        new = 1
    else:
        conn.execute(M.update().where(M.c.key == ROUTES_GENERATION).values(number=current + 1))
        new = int(current) + 1
    if conn.dialect.name == "postgresql":
        if conn.get_execution_options().get("backout_write"):
            conn.info[_PENDING] = new  # announced by announce_routes as the write ends
        else:
            _notify(conn, str(new))
    return new


def clear_routes_notice(conn: Connection) -> None:
    """Forget an announcement not sent (the write failed; ``info`` outlives the checkout)."""
    conn.info.pop(_PENDING, None)


def announce_routes(conn: Connection) -> None:
    """Send the notification of a write that bumped the routes generation, as its last
    statement: PostgreSQL delivers it when the transaction commits, so listening gateway
    workers learn of the change at once, with the new state when it fits."""
    generation = conn.info.pop(_PENDING, None)
    if generation is None:
        return
    payload = None
    if _payload:
        payload = _payload[0](conn, generation)
        if payload is not None and len(payload.encode()) > NOTIFY_PAYLOAD_LIMIT:
            log.debug("route state of generation %d is too large to notify", generation)
            payload = None
    _notify(conn, payload or str(generation))


def _notify(conn: Connection, payload: str) -> None:
    conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": ROUTES_CHANNEL, "p": payload})
