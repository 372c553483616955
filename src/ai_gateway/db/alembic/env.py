"""Alembic's environment: the gateway's migrations on the connection `db.migrations` hands in.

Alembic runs this file on every migration command; it needs no alembic.ini.
"""

from alembic import context

from ai_gateway.db.migrations import VERSION_TABLE
from ai_gateway.keys.tables import metadata
from ai_gateway.usage import tables as _usage_tables  # noqa: F401  # registers the ledger


def run_migrations() -> None:
    """Migrate over the caller's connection, inside its transaction."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("Run the gateway's migrations with `ai-gateway db upgrade`.")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things: generated migrations copy the table instead.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
