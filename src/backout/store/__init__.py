"""The store: the single source of truth, on SQLite (default) or PostgreSQL.

The bottom layer. ``engine`` connects, migrates (Alembic, ``migrations/``) and serialises
writers: SQLite takes its write lock up front with ``BEGIN IMMEDIATE``; PostgreSQL takes a
transaction-scoped advisory lock. ``schema`` is every table; ``audit`` the hash-chained
event log; ``retention`` how long rows are kept, pruning with signed checkpoints;
``generation`` the number gateways watch for route changes.
"""

from backout.store import schema
from backout.store.engine import DEFAULT_HOME, Store, as_utc, default_url, open_store, redact_url
from backout.store.generation import bump_generation, read_generation

__all__ = [
    "DEFAULT_HOME",
    "Store",
    "as_utc",
    "bump_generation",
    "default_url",
    "open_store",
    "read_generation",
    "redact_url",
    "schema",
]
