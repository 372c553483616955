"""DATABASE_URL to an async engine: drivers, passwords kept out of messages, per-backend setup."""

from pathlib import Path

import pytest
from sqlalchemy import text

from ai_gateway.db.engine import POSTGRES_POOL_SIZE, create_engine, database_url
from ai_gateway.errors import ConfigurationError
from tests.db.databases import opened
from tests.services import postgres_database

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (None, "sqlite+aiosqlite:///ai-gateway.db"),
        ("sqlite:///data/gw.db", "sqlite+aiosqlite:///data/gw.db"),
        ("sqlite:////var/lib/gw.db", "sqlite+aiosqlite:////var/lib/gw.db"),
        ("sqlite+aiosqlite:///gw.db", "sqlite+aiosqlite:///gw.db"),
        ("postgresql://u:pw@db:5432/gw", "postgresql+asyncpg://u:pw@db:5432/gw"),
        ("postgres://u:pw@db/gw", "postgresql+asyncpg://u:pw@db/gw"),
        ("postgresql+asyncpg://u@db/gw", "postgresql+asyncpg://u@db/gw"),
    ],
)
def test_database_url_names_the_async_driver(configured: str | None, expected: str) -> None:
    assert database_url(configured) == expected


def test_an_unsupported_database_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        database_url("mysql://admin:hunter2@db/gw")

    assert caught.value.message == (
        "DATABASE_URL mysql://admin:***@db/gw is not supported: use sqlite:///<file> or "
        "postgresql://<user>:<password>@<host>/<database>."
    )


def test_text_that_is_no_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"^DATABASE_URL is not a database URL"):
        database_url("hunter2")


async def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(
    tmp_path: Path,
) -> None:
    async with opened(f"sqlite:///{tmp_path / 'gw.db'}") as engine, engine.connect() as db:
        pragmas = [
            (await db.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout")
        ]

    assert pragmas == ["wal", 1, 5000]


async def test_postgresql_has_a_bounded_pool() -> None:
    async with postgres_database() as url:
        engine = create_engine(database_url(url))
        try:
            async with engine.connect() as db:
                assert (await db.execute(text("SELECT 1"))).scalar() == 1
            assert engine.pool.size() == POSTGRES_POOL_SIZE  # type: ignore[attr-defined]
        finally:
            await engine.dispose()
