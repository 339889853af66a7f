"""The state index also carries key, sheet row and estimated cost.

A rerun of a nearly-done 100,000-job sheet reads its completed jobs from this index alone
(no table rows, which hold the prompts), and its other jobs by state as before.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COVERING = ["state", "key", "sheet_row", "estimated_cost"]


def upgrade() -> None:
    """Replace ix_jobs_state with a covering index that starts with state."""
    op.create_index("ix_jobs_state_key", "jobs", COVERING)
    op.drop_index("ix_jobs_state", "jobs")


def downgrade() -> None:
    """Back to the plain state index."""
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.drop_index("ix_jobs_state_key", "jobs")
