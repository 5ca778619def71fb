"""The routes generation: one number that changes whenever anything a gateway routes by changes.

Gateways compare it to the one they hold (SQLite: ``PRAGMA data_version`` tells them to
look; PostgreSQL: a ``backout_routes`` notification) and reload their route table when it
moved.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.store import schema

ROUTES_GENERATION = "routes.generation"


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
        _notify_routes(conn, 1)
        return 1
    conn.execute(M.update().where(M.c.key == ROUTES_GENERATION).values(number=current + 1))
    _notify_routes(conn, int(current) + 1)
    return int(current) + 1


def _notify_routes(conn: Connection, generation: int) -> None:
    # PostgreSQL delivers the notification when this transaction commits, so listening
    # gateway workers learn of the change at once instead of on their next poll; the
    # payload is the new generation, which spares each of them a read to learn it.
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify('backout_routes', :g)"), {"g": str(generation)})
