"""The run that claimed a job: a claim belongs to its run.

A job claimed as `submitting` records the run (its lock's run_id) that is sending it, so a
run sharing the ledger, or `--resubmit-unknown`, leaves the claims of a live run alone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add jobs.claimed_by."""
    op.add_column("jobs", sa.Column("claimed_by", sa.String(64)))


def downgrade() -> None:
    """Drop it."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("claimed_by")
