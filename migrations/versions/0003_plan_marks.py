"""Plan marks: per sheet, a digest of its jobs and rows as its last resume left the ledger.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the plan_marks table."""
    op.create_table(
        "plan_marks",
        sa.Column("scope", sa.String(1024), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("plan_marks")
