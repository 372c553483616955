"""Key and team changes on Redis pub/sub: what `publish` sends, `parse` reads back."""

import asyncio
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.client import PubSub

from ai_gateway.keys.caller import Scope
from ai_gateway.keys.invalidation import CHANNEL_SUFFIX, channel, parse, publish
from ai_gateway.keys.records import Change
from tests.services import REDIS_URL, redis_prefix

pytestmark = pytest.mark.anyio


async def next_message(pubsub: PubSub) -> Any:
    """The next published message (the subscription's confirmation reads as None)."""
    async with asyncio.timeout(5):
        while (message := await pubsub.get_message(timeout=1.0)) is None:
            pass
    return message


async def test_a_published_change_reaches_a_subscriber() -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        with redis_prefix() as prefix:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(channel(prefix))
                await publish(client, prefix, Change(Scope.TEAM, "team_1"))
                message = await next_message(pubsub)
    finally:
        await client.aclose()

    assert message["channel"] == f"{prefix}:{CHANNEL_SUFFIX}".encode()
    assert parse(message["data"]) == Change(Scope.TEAM, "team_1")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b'{"scope": "key", "id": "key_1"}', Change(Scope.KEY, "key_1")),
        ('{"scope": "team", "id": "team_1"}', Change(Scope.TEAM, "team_1")),
        (b"{", None),
        (b"[]", None),
        (b'{"scope": "user", "id": "u"}', None),
        (b'{"scope": "key", "id": 7}', None),
        (b'{"scope": "key", "id": ""}', None),
        (b'{"scope": "key", "id": "' + b"k" * 65 + b'"}', None),
    ],
)
def test_parse_reads_changes_and_ignores_anything_else(
    message: bytes | str, expected: Change | None
) -> None:
    assert parse(message) == expected
