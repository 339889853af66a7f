"""Jobs ledger and per-sheet run locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the jobs and run_locks tables."""
    op.create_table(
        "jobs",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("model_id", sa.String(255), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("take", sa.Integer, nullable=False, server_default="1"),
        sa.Column("label", sa.Text, nullable=False, server_default=""),
        sa.Column("sheet_row", sa.Integer),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(255)),
        sa.Column("queue_position", sa.Integer),
        sa.Column("video_url", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("estimated_cost", sa.Float),
        sa.Column("cost", sa.Float),
        sa.Column("submit_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("submitted_at", sa.Float),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("download_path", sa.Text),
    )
    op.create_index("ix_jobs_request_id", "jobs", ["request_id"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "run_locks",
        sa.Column("scope", sa.String(1024), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("progress", sa.Text, nullable=False, server_default="{}"),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("run_locks")
    op.drop_index("ix_jobs_state", "jobs")
    op.drop_index("ix_jobs_request_id", "jobs")
    op.drop_table("jobs")
