"""Reading the ledger table back in tests."""

from typing import Any

from sqlalchemy import select

from ai_gateway.db.engine import create_engine, database_url
from ai_gateway.usage.tables import ledger


async def ledger_rows(url: str) -> list[dict[str, Any]]:
    """Every ledger row of the database at `url` (as DATABASE_URL names it), oldest first."""
    engine = create_engine(database_url(url))
    try:
        async with engine.connect() as connection:
            result = await connection.execute(select(ledger).order_by(ledger.c.created_at))
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()
