"""The store's identity: a random id written once, when the store is created.

Gateway workers remember the identity of the store their route table came from and never
swap in a table from a store with another identity (a file replaced behind their back, a
store URL that now points elsewhere). The id lives in the ``meta`` table under
``store.id``; migration 0004 gives stores created before it one.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backout.store import schema

STORE_ID = "store.id"


def new_identity() -> str:
    """A fresh store identity: 32 random hex digits."""
    return uuid.uuid4().hex


def read_identity(conn: Connection) -> str | None:
    """The identity of the store behind ``conn``, or None for a store that has none yet."""
    M = schema.meta
    value = conn.execute(sa.select(M.c.value).where(M.c.key == STORE_ID)).scalar()
    return str(value) if value else None
