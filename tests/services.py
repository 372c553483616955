"""The machine's real PostgreSQL and Redis for tests: each test gets its own database or key
prefix, removed afterwards. Addresses come from TEST_POSTGRES_URL / TEST_REDIS_URL (defaults:
127.0.0.1:5432 as user postgres, 127.0.0.1:6379)."""

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg
import redis
import redis.asyncio

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unique_name(kind: str) -> str:
    """A name no other test (or test run) uses."""
    return f"gw_test_{kind}_{secrets.token_hex(6)}"


def database_url(name: str) -> str:
    """The SQLAlchemy URL of database `name` on the test server."""
    base, _, _ = POSTGRES_URL.rpartition("/")
    return f"{base}/{name}"


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one test; its URL. Dropped afterwards."""
    name = unique_name("db")
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield database_url(name)
    finally:
        admin = await asyncpg.connect(POSTGRES_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A key prefix of its own on the test Redis; every key under it is deleted afterwards."""
    prefix = unique_name("redis")
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            names = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if names:
                client.delete(*names)
        finally:
            client.close()


async def redis_is_reachable() -> bool:
    """Whether the test Redis answers (tests fail, not skip, when it does not)."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()
