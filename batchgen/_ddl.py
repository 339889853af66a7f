"""The ledger schema's revision and its SQLite DDL, as text: no SQLAlchemy import needed.

A SQLite run creates a new ledger and reads its revision without importing SQLAlchemy, whose
import took 0.2–0.3 s of a 2-second run. SQLITE_SCHEMA is word for word what
`schema.metadata.create_all` emits on SQLite plus the completed-jobs index and Alembic's
version table; tests hold it equal to both that and what the migrations build.
"""

from __future__ import annotations

SCHEMA_REVISION = "0003"  # the newest migration's revision
VERSION_TABLE = "alembic_version"  # Alembic's bookkeeping table

# 0002: the completed jobs' key, row and cost, so a rerun reads them without the table rows.
# As DDL, not an sa.Index: its postgresql_where would import SQLAlchemy's PostgreSQL dialect
# (60 ms) into every run. The same statement on both databases.
COMPLETED_INDEX_DDL = (
    'CREATE INDEX ix_jobs_completed ON jobs ("key", sheet_row, estimated_cost, state) '
    "WHERE state = 'completed'"
)

SQLITE_SCHEMA = (
    "CREATE TABLE jobs (\n"
    '\t"key" VARCHAR(255) NOT NULL, \n'
    "\tmodel_id VARCHAR(255) NOT NULL, \n"
    "\tpayload TEXT NOT NULL, \n"
    "\ttake INTEGER DEFAULT '1' NOT NULL, \n"
    "\tlabel TEXT DEFAULT '' NOT NULL, \n"
    "\tsheet_row INTEGER, \n"
    "\tstate VARCHAR(32) NOT NULL, \n"
    "\trequest_id VARCHAR(255), \n"
    "\tqueue_position INTEGER, \n"
    "\tvideo_url TEXT, \n"
    "\terror TEXT, \n"
    "\testimated_cost FLOAT, \n"
    "\tcost FLOAT, \n"
    "\tsubmit_attempts INTEGER DEFAULT '0' NOT NULL, \n"
    "\tcreated_at FLOAT NOT NULL, \n"
    "\tsubmitted_at FLOAT, \n"
    "\tstarted_at FLOAT, \n"
    "\tfinished_at FLOAT, \n"
    "\tupdated_at FLOAT NOT NULL, \n"
    "\tdownload_path TEXT, \n"
    '\tPRIMARY KEY ("key")\n'
    ")",
    "CREATE INDEX ix_jobs_state ON jobs (state)",
    "CREATE INDEX ix_jobs_request_id ON jobs (request_id)",
    "CREATE TABLE run_locks (\n"
    "\tscope VARCHAR(1024) NOT NULL, \n"
    "\trun_id VARCHAR(64) NOT NULL, \n"
    "\tpid INTEGER NOT NULL, \n"
    "\thost VARCHAR(255) NOT NULL, \n"
    "\tstarted_at FLOAT NOT NULL, \n"
    "\theartbeat_at FLOAT NOT NULL, \n"
    "\tprogress TEXT DEFAULT '{}' NOT NULL, \n"
    "\tPRIMARY KEY (scope)\n"
    ")",
    "CREATE TABLE plan_marks (\n"
    "\tscope VARCHAR(1024) NOT NULL, \n"
    "\tdigest VARCHAR(64) NOT NULL, \n"
    "\tPRIMARY KEY (scope)\n"
    ")",
    COMPLETED_INDEX_DDL,
    "CREATE TABLE alembic_version (\n"
    "\tversion_num VARCHAR(32) NOT NULL, \n"
    "\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n"
    ")",
)
