"""The schema's migrations: Alembic driven from code, its scripts shipped inside the package.

Alembic (about 10 MiB of modules) is imported only when the schema is not at HEAD: a gateway
restarted on an up-to-date database reads the version table with one query and goes on.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.db.engine import failure_reason
from ai_gateway.errors import ConfigurationError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = structlog.get_logger(__name__)

SCRIPTS: Final = Path(__file__).with_name("alembic")
VERSION_TABLE: Final = "ai_gateway_alembic_version"
"""Our own name, so a database shared with another Alembic-managed application stays apart."""
UPGRADE_LOCK: Final = 0x61692D6777
"""The PostgreSQL advisory lock one `db upgrade` holds while it runs (any number: ours)."""
UPGRADE_COMMAND: Final = "ai-gateway db upgrade"
HEAD: Final = "0003"
"""The newest revision in db/alembic/versions (a test holds it to Alembic's own head)."""


def alembic_config(connection: Connection | None = None) -> "Config":
    """Alembic's configuration without an alembic.ini; env.py migrates over `connection`."""
    from alembic.config import Config  # only when migrating

    config = Config()
    # Config values are %-interpolated: a literal % in the install path must be doubled.
    config.set_main_option("script_location", str(SCRIPTS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def scripts() -> "ScriptDirectory":
    """The migration scripts shipped with the gateway."""
    from alembic.script import ScriptDirectory  # only when migrating

    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this gateway knows."""
    revision = scripts().get_current_head()
    if revision is None:
        raise RuntimeError("the package ships no migrations")
    return revision


def unreachable(engine: AsyncEngine, error: Exception) -> ConfigurationError:
    """The start-up error for a database that cannot be opened (the password left out)."""
    where = engine.url.render_as_string(hide_password=True)
    reason = failure_reason(error)
    return ConfigurationError(f"Cannot open the database {where}: {reason}")


def is_known(revision: str) -> bool:
    """Whether this gateway ships the revision (a newer gateway may have migrated further)."""
    return revision in {script.revision for script in scripts().walk_revisions()}


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema's revision; None for a database without our tables."""
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read_revision)
    except (SQLAlchemyError, OSError) as error:
        raise unreachable(engine, error) from error


def read_revision(connection: Connection) -> str | None:
    """The revision recorded in the version table (None without one: an empty database)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    # Our own table's fixed name: nothing of the caller's is in the statement.
    revision = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()  # noqa: S608
    return None if revision is None else str(revision)


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema up to the newest revision; safe to run from several processes at once."""
    from alembic.util import CommandError  # only when migrating

    try:
        async with engine.begin() as connection:
            await connection.run_sync(upgrade_locked)
    except CommandError as error:  # the database names a revision this gateway does not know
        raise ConfigurationError(f"Cannot upgrade the database schema: {error}") from error
    except (SQLAlchemyError, OSError) as error:
        raise unreachable(engine, error) from error


def upgrade_locked(connection: Connection) -> None:
    """Upgrade holding the database's write lock, so a second process waits and finds the work
    done instead of creating the same tables again."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": UPGRADE_LOCK})
    from alembic import command  # only when migrating

    command.upgrade(alembic_config(connection), "head")


async def ensure_schema(engine: AsyncEngine, *, is_sqlite: bool | None = None) -> None:
    """At start-up: SQLite is upgraded in place; a PostgreSQL schema that is behind stops the
    gateway (one `db upgrade` migrates it for every replica). `is_sqlite` defaults to the
    engine's dialect."""
    if is_sqlite is None:
        is_sqlite = engine.dialect.name == "sqlite"
    current = await current_revision(engine)
    if current == HEAD:
        return
    newest = head()
    if current is not None and not is_known(current):
        raise ConfigurationError(
            f"The database schema (revision {current}) is newer than this gateway "
            f"(revision {newest}): upgrade the gateway."
        )
    if is_sqlite:
        await upgrade(engine)
        log.info("database_schema_upgraded", revision=newest)
        return
    raise ConfigurationError(
        f"The database schema is behind (revision {current or 'none'}, this gateway needs "
        f"{newest}): run `{UPGRADE_COMMAND}` with the same DATABASE_URL, then start the gateway."
    )
