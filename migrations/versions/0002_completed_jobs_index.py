"""A partial index of the completed jobs' key, sheet row and estimated cost.

A rerun of a nearly-done 100,000-job sheet reads its completed jobs from this index alone
(no table rows, which hold the prompts). Partial, so that a job's state changes during a run
do not move its entry: only its completion adds one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COMPLETED = sa.text("state = 'completed'")


def upgrade() -> None:
    """Create ix_jobs_completed."""
    op.create_index(
        "ix_jobs_completed",
        "jobs",
        ["key", "sheet_row", "estimated_cost", "state"],  # state too, or SQLite reads the row
        sqlite_where=COMPLETED,
        postgresql_where=COMPLETED,
    )


def downgrade() -> None:
    """Drop ix_jobs_completed."""
    op.drop_index("ix_jobs_completed", "jobs")
