"""The database engine: DATABASE_URL made async (aiosqlite, asyncpg) and tuned per backend."""

from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ai_gateway.config.constants import DEFAULT_DATABASE_FILE
from ai_gateway.errors import ConfigurationError

SQLITE_DRIVER: Final = "sqlite+aiosqlite"
POSTGRES_DRIVER: Final = "postgresql+asyncpg"
DRIVERS: Final = {
    "sqlite": SQLITE_DRIVER,
    SQLITE_DRIVER: SQLITE_DRIVER,
    "postgresql": POSTGRES_DRIVER,
    "postgres": POSTGRES_DRIVER,
    POSTGRES_DRIVER: POSTGRES_DRIVER,
}

SQLITE_BUSY_TIMEOUT_MS: Final = 5_000
"""How long a writer waits for another process's lock (the CLI and the gateway share the file)."""
POSTGRES_POOL_SIZE: Final = 5
"""Connections kept open per process: admin calls, key loads and `last_used_at` flushes are
short and rare, so a few suffice; a replica with N workers holds up to N x (5 + 5)."""
POSTGRES_MAX_OVERFLOW: Final = 5
POSTGRES_POOL_TIMEOUT_S: Final = 10.0
POSTGRES_CONNECT_TIMEOUT_S: Final = 5.0


def database_url(configured: str | None) -> str:
    """The async SQLAlchemy URL for DATABASE_URL; unset = the SQLite file in the working
    directory."""
    if configured is None:
        return f"{SQLITE_DRIVER}:///{DEFAULT_DATABASE_FILE}"
    try:
        url = make_url(configured.strip())
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigurationError(
            "DATABASE_URL is not a database URL: use sqlite:///<file> or "
            "postgresql://<user>:<password>@<host>/<database>."
        ) from None
    driver = DRIVERS.get(url.drivername)
    if driver is None:
        raise ConfigurationError(
            f"DATABASE_URL {url.render_as_string(hide_password=True)} is not supported: use "
            "sqlite:///<file> or postgresql://<user>:<password>@<host>/<database>."
        )
    return url.set(drivername=driver).render_as_string(hide_password=False)


def is_sqlite(url: str | URL) -> bool:
    """Whether the URL names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str) -> AsyncEngine:
    """An engine for a URL from `database_url`: SQLite in WAL mode with a busy timeout and
    foreign keys on; PostgreSQL with a bounded pool and a connect timeout."""
    if is_sqlite(url):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", configure_sqlite)
        return engine
    return create_async_engine(
        url,
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=POSTGRES_MAX_OVERFLOW,
        pool_timeout=POSTGRES_POOL_TIMEOUT_S,
        pool_pre_ping=True,
        connect_args={"timeout": POSTGRES_CONNECT_TIMEOUT_S},
    )


def configure_sqlite(connection: Any, _record: Any) -> None:
    """Per connection: WAL lets the gateway read while the CLI writes; foreign keys are off in
    SQLite unless asked for."""
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def failure_reason(error: BaseException) -> str:
    """What the database driver said (not SQLAlchemy's wrapping with the statement), first line."""
    text = str(getattr(error, "orig", None) or error)
    return (text.splitlines() or [type(error).__name__])[0]
