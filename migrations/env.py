"""Alembic environment: runs on the connection batchgen hands over, or on `-x url=...`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

config = context.config


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit(
            "give the ledger as: alembic -c migrations/alembic.ini -x url=URL upgrade head"
        )
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()
