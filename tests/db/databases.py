"""Real databases for tests: a SQLite file in the test's directory, or a fresh PostgreSQL
database on the machine's server (dropped afterwards)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.db.engine import create_engine, database_url
from tests.services import postgres_database

KINDS = ("sqlite", "postgresql")


@asynccontextmanager
async def fresh_database(kind: str, directory: Path) -> AsyncIterator[str]:
    """An empty database's URL, as DATABASE_URL would name it."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'gateway.db'}"
        return
    async with postgres_database() as url:
        yield url


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the URL, disposed afterwards."""
    engine = create_engine(database_url(url))
    try:
        yield engine
    finally:
        await engine.dispose()
