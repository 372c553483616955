"""subscribe(): changes announced on the real Redis arrive; malformed messages are skipped; a
lost subscription is restored and the cache reloaded, the outage logged once each way."""

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from structlog.testing import capture_logs

from ai_gateway.keys.caller import Scope
from ai_gateway.keys.invalidation import channel, publish
from ai_gateway.keys.records import Change
from ai_gateway.keys.subscription import reload_quietly, subscribe
from tests.services import REDIS_URL, redis_prefix

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client() -> AsyncIterator[tuple["redis.asyncio.Redis", str]]:
    with redis_prefix() as prefix:
        connection = redis.asyncio.Redis.from_url(REDIS_URL, client_name=prefix)
        try:
            yield connection, prefix
        finally:
            await connection.aclose()


async def subscribed(connection: "redis.asyncio.Redis", prefix: str) -> None:
    """Wait until the subscription is in place (a message published earlier is lost)."""
    for _ in range(200):
        counts = await connection.pubsub_numsub(channel(prefix))
        if counts and counts[0][1] > 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never subscribed")


async def test_an_announced_change_arrives_and_garbage_is_skipped(
    client: tuple["redis.asyncio.Redis", str],
) -> None:
    connection, prefix = client
    reloads: list[int] = []

    async def reload() -> None:
        reloads.append(1)

    changes = subscribe(connection, prefix, on_reconnect=reload)
    first = asyncio.ensure_future(anext(changes))
    await subscribed(connection, prefix)
    await connection.publish(channel(prefix), b"not json")
    await publish(connection, prefix, Change(Scope.TEAM, "team_1"))

    assert await asyncio.wait_for(first, 5) == Change(Scope.TEAM, "team_1")
    assert reloads == []
    await changes.aclose()


async def test_a_lost_subscription_is_restored_and_the_cache_reloaded(
    client: tuple["redis.asyncio.Redis", str],
) -> None:
    connection, prefix = client
    reloaded = asyncio.Event()

    async def reload() -> None:
        reloaded.set()

    changes = subscribe(connection, prefix, on_reconnect=reload)
    with capture_logs() as logs:
        waiting = asyncio.ensure_future(anext(changes))
        await subscribed(connection, prefix)
        killer = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            ours = [c for c in await killer.client_list() if c["name"] == prefix]
            for entry in ours:
                if entry["cmd"] in {"subscribe", "ssubscribe"} or int(entry.get("sub", 0)):
                    await killer.client_kill_filter(_id=entry["id"])
            await asyncio.wait_for(reloaded.wait(), 10)
            await subscribed(connection, prefix)
            await publish(connection, prefix, Change(Scope.KEY, "key_1"))
            assert await asyncio.wait_for(waiting, 5) == Change(Scope.KEY, "key_1")
        finally:
            await killer.aclose()
    events = [entry["event"] for entry in logs]
    assert events.count("key_changes_unsubscribed") == 1
    assert events.count("key_changes_resubscribed") == 1
    await changes.aclose()


async def test_a_reload_that_fails_after_reconnecting_is_logged_not_fatal() -> None:
    async def failing() -> None:
        raise OSError("the database is down too")

    with capture_logs() as logs:
        await reload_quietly(failing)

    assert [entry["event"] for entry in logs] == ["key_reload_failed"]
