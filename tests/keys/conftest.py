"""Keys and teams over real databases: every test runs on SQLite and on PostgreSQL."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.db.migrations import upgrade
from ai_gateway.keys.admin import KeyAdmin
from ai_gateway.keys.records import Change
from ai_gateway.keys.sql import KeyRepository
from tests.db.databases import KINDS, fresh_database, opened

FUTURE_YEAR = datetime.now(UTC).year + 5
"""A year always ahead of the clock, for expiries: one must be in the future when it is set."""


@pytest.fixture(params=KINDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of each kind, as DATABASE_URL names it."""
    async with fresh_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the database, its schema migrated."""
    async with opened(url) as opened_engine:
        await upgrade(opened_engine)
        yield opened_engine


@pytest.fixture
def repository(engine: AsyncEngine) -> KeyRepository:
    return KeyRepository(engine)


@pytest.fixture
def changes() -> list[Change]:
    """Every change the admin announced, in order."""
    return []


@pytest.fixture
def admin(repository: KeyRepository, changes: list[Change]) -> KeyAdmin:
    async def notify(change: Change) -> None:
        changes.append(change)

    return KeyAdmin(repository, notify)
