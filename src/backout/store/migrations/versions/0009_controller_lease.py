"""The controller lease's fencing token and when its holder took it.

``generation`` grows by one each time the lease passes to another holder; a controller
writes only while the stored generation is the one it acquired, so a deposed leader (paused
past its lease, then woken) cannot write. ``acquired_at`` says since when the holder leads.

Revision ID: 0009
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("generation", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("acquired_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("acquired_at")
        batch.drop_column("generation")
