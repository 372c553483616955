"""The schema's migrations: from empty to head on both backends, SQLite upgraded at start-up,
a PostgreSQL that is behind refused with the command that fixes it."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, column, inspect, table, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.db.migrations import (
    HEAD,
    VERSION_TABLE,
    current_revision,
    ensure_schema,
    head,
    upgrade,
)
from ai_gateway.errors import ConfigurationError
from ai_gateway.keys.tables import metadata
from ai_gateway.usage import tables as ledger_tables  # noqa: F401  # the ledger on the metadata
from tests.db.databases import KINDS, fresh_database, opened
from tests.fresh_interpreter import last_line

pytestmark = pytest.mark.anyio

version = table(VERSION_TABLE, column("version_num"))


@pytest.fixture(params=KINDS)
async def empty(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database of each kind."""
    async with fresh_database(request.param, tmp_path) as url, opened(url) as engine:
        yield engine


def differences(connection: Connection) -> list[object]:
    """What the migrated schema lacks or has beyond the tables the code declares."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return list(compare_metadata(context, metadata))


def table_names(connection: Connection) -> list[str]:
    return sorted(inspect(connection).get_table_names())


async def test_upgrade_builds_the_declared_schema_from_empty(empty: AsyncEngine) -> None:
    assert await current_revision(empty) is None

    await upgrade(empty)

    assert await current_revision(empty) == head() == "0003"
    async with empty.connect() as db:
        assert await db.run_sync(table_names) == [
            "ai_gateway_alembic_version",
            "keys",
            "teams",
            "usage_ledger",
        ]
        assert await db.run_sync(differences) == []


async def test_upgrade_is_safe_to_repeat_and_to_race(empty: AsyncEngine) -> None:
    async with opened(empty.url.render_as_string(hide_password=False)) as other:
        await asyncio.gather(upgrade(empty), upgrade(other))
    await upgrade(empty)

    assert await current_revision(empty) == head()


async def test_sqlite_is_brought_up_to_date_at_start_up(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path / 'gw.db'}") as engine:
        await ensure_schema(engine, is_sqlite=True)

        assert await current_revision(engine) == head()


def test_head_is_the_newest_revision_shipped() -> None:
    assert head() == HEAD


def alembic_loaded_by_a_start(url: str, directory: Path) -> bool:
    """Whether a fresh interpreter that checks the schema at `url` at start-up loads Alembic."""
    script = (
        "import asyncio, sys\n"
        "from ai_gateway.db.migrations import ensure_schema\n"
        "from tests.db.databases import opened\n"
        "async def start():\n"
        f"    async with opened({url!r}) as engine:\n"
        "        await ensure_schema(engine)\n"
        "asyncio.run(start())\n"
        "print('alembic' in sys.modules)\n"
    )
    return last_line(script, directory) == "True"


async def test_a_start_on_an_up_to_date_database_does_not_load_alembic(
    empty: AsyncEngine, tmp_path: Path
) -> None:
    await upgrade(empty)
    url = empty.url.render_as_string(hide_password=False)

    assert not await asyncio.to_thread(alembic_loaded_by_a_start, url, tmp_path)


async def test_a_start_that_migrates_sqlite_loads_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"

    assert await asyncio.to_thread(alembic_loaded_by_a_start, url, tmp_path)


async def test_an_empty_postgresql_is_refused_with_the_command_to_run() -> None:
    async with fresh_database("postgresql", Path()) as url, opened(url) as engine:
        with pytest.raises(ConfigurationError) as caught:
            await ensure_schema(engine, is_sqlite=False)

        assert caught.value.message == (
            "The database schema is behind (revision none, this gateway needs 0003): run "
            "`ai-gateway db upgrade` with the same DATABASE_URL, then start the gateway."
        )
        assert await current_revision(engine) is None


async def test_an_upgraded_postgresql_starts(empty: AsyncEngine) -> None:
    await upgrade(empty)

    await ensure_schema(empty, is_sqlite=False)


async def test_a_schema_newer_than_the_gateway_is_refused(empty: AsyncEngine) -> None:
    await upgrade(empty)
    async with empty.begin() as db:
        await db.execute(update(version).values(version_num="0999"))

    with pytest.raises(ConfigurationError, match=r"revision 0999\) is newer than this gateway"):
        await ensure_schema(empty)
    with pytest.raises(ConfigurationError, match=r"^Cannot upgrade the database schema"):
        await upgrade(empty)


async def test_an_unreachable_database_is_a_configuration_error_without_the_password() -> None:
    async with opened("postgresql://postgres:hunter2@127.0.0.1:1/gw") as engine:
        with pytest.raises(ConfigurationError) as caught:
            await ensure_schema(engine)

    assert caught.value.message.startswith(
        "Cannot open the database postgresql+asyncpg://postgres:***@127.0.0.1:1/gw: "
    )
    assert "hunter2" not in caught.value.message
