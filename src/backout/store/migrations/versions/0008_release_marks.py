"""Bad releases: the evidence, the operation, who and when, on each release row.

Revision ID: 0008
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = ("bad", "bad_operation", "bad_at", "bad_by")


def upgrade() -> None:
    # Nullable columns only: existing releases stay as they were (not bad), and SQLite adds
    # them with a plain ALTER TABLE, without rebuilding the table.
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("bad", sa.Text, nullable=True))
        batch.add_column(sa.Column("bad_operation", sa.Integer, nullable=True))
        batch.add_column(sa.Column("bad_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("bad_by", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
