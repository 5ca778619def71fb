"""The store's identity: a random id in ``meta``, written once.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_meta = sa.table(
    "meta",
    sa.column("key", sa.String),
    sa.column("value", sa.Text),
    sa.column("number", sa.BigInteger),
)


def upgrade() -> None:
    conn = op.get_bind()
    found = conn.execute(sa.select(_meta.c.key).where(_meta.c.key == "store.id")).first()
    if found is None:
        op.bulk_insert(_meta, [{"key": "store.id", "value": uuid.uuid4().hex, "number": 0}])


def downgrade() -> None:
    op.execute(_meta.delete().where(_meta.c.key == "store.id"))
