"""Incidents and their updates, for the status page and the incident view.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("operation_id", sa.Integer, nullable=True),
        sa.Column("last_operation_id", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )
    op.create_index("ix_incidents_model", "incidents", ["model", "resolved_at"])
    op.create_table(
        "incident_updates",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("automatic", sa.Boolean, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_incident_updates"),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name="fk_incident_updates_incident_id_incidents",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_incident_updates_incident_id", "incident_updates", ["incident_id", "id"])


def downgrade() -> None:
    op.drop_table("incident_updates")
    op.drop_table("incidents")
