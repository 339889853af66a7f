"""Cancel requests: `batchgen cancel` tells a run in progress, on any host, to stop submitting.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the run_cancels table."""
    op.create_table(
        "run_cancels",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("scope", sa.String(1024), nullable=False),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("acknowledged_at", sa.Float),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("run_cancels")
