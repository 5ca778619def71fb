"""The store: the single source of truth, on SQLite (default) or PostgreSQL.

The bottom layer. ``engine`` connects, migrates (Alembic, ``migrations/``) and serialises
writers: SQLite takes its write lock up front with ``BEGIN IMMEDIATE``; PostgreSQL takes a
transaction-scoped advisory lock. ``schema`` is every table; ``audit`` the hash-chained
event log; ``retention`` how long rows are kept, pruning with signed checkpoints;
``generation`` the number gateways watch for route changes; ``identity`` the random id that
tells one store from another; ``outage`` how a long-running loop reports a store outage:
one line when it starts, one when it ends.
"""

from backout.store import schema
from backout.store.engine import (
    DEFAULT_HOME,
    Store,
    as_utc,
    default_url,
    open_store,
    redact_url,
    sqlite_path,
)
from backout.store.generation import (
    NOTIFY_PAYLOAD_LIMIT,
    ROUTES_CHANNEL,
    bump_generation,
    read_generation,
    routes_payload,
    set_routes_payload,
)
from backout.store.identity import read_identity
from backout.store.outage import Outage

__all__ = [
    "DEFAULT_HOME",
    "NOTIFY_PAYLOAD_LIMIT",
    "ROUTES_CHANNEL",
    "Outage",
    "Store",
    "as_utc",
    "bump_generation",
    "default_url",
    "open_store",
    "read_generation",
    "read_identity",
    "redact_url",
    "routes_payload",
    "schema",
    "set_routes_payload",
    "sqlite_path",
]
