"""ScriptRunner against the test Redis: callers share its connections in turn, a caller that
stops waiting is passed over without losing the connection, and no more connections are made
than its size."""

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio

from ai_gateway.limits.redis_store import redis_client
from ai_gateway.limits.script_runner import ScriptRunner
from tests.services import REDIS_URL, redis_prefix

pytestmark = pytest.mark.anyio

PUSH = "return redis.call('RPUSH', KEYS[1], ARGV[1])"
CALLERS = 5
ROUNDS = 6


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as name:
        yield name


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    made = redis_client(REDIS_URL, timeout_s=2.0)
    try:
        yield made
    finally:
        await made.aclose()


async def pushed(client: redis.asyncio.Redis, key: str) -> list[str]:
    return [value.decode() for value in await client.lrange(key, 0, -1)]  # type: ignore[misc]


async def test_callers_that_call_again_at_once_queue_behind_those_waiting(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    """One connection, five callers each calling again as soon as a call returns: a returning
    connection goes to the caller waiting longest, never to the one that just gave it back (it
    would take every turn, and the others would wait out their timeout)."""
    runner = ScriptRunner(client, {"push": PUSH}, size=1)
    key = f"{prefix}:order"

    async def caller(name: str) -> None:
        for _ in range(ROUNDS):
            await runner.run([("push", [key], [name])])

    try:
        await asyncio.gather(*(caller(str(index)) for index in range(CALLERS)))
    finally:
        await runner.aclose()
    order = await pushed(client, key)
    assert len(order) == CALLERS * ROUNDS
    for start in range(0, len(order), CALLERS):
        assert sorted(order[start : start + CALLERS]) == [str(i) for i in range(CALLERS)]


async def test_a_caller_that_stops_waiting_is_passed_over(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    """A waiting caller cancelled (its request ended) leaves its place: the connection goes to
    the next caller, and nothing is lost."""
    runner = ScriptRunner(client, {"push": PUSH}, size=1)
    key = f"{prefix}:skip"
    try:
        first = asyncio.ensure_future(runner.run([("push", [key], ["first"])]))
        gone = asyncio.ensure_future(runner.run([("push", [key], ["gone"])]))
        last = asyncio.ensure_future(runner.run([("push", [key], ["last"])]))
        await asyncio.sleep(0)  # `first` holds the connection; the two others wait
        gone.cancel()
        async with asyncio.timeout(2):
            await asyncio.gather(first, last)
            await runner.run([("push", [key], ["after"])])
        assert gone.cancelled()
    finally:
        await runner.aclose()
    assert await pushed(client, key) == ["first", "last", "after"]


async def test_no_more_connections_are_made_than_the_size(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    """Callers beyond the size wait for a connection rather than open one of their own."""
    runner = ScriptRunner(client, {"push": PUSH}, size=3)
    key = f"{prefix}:size"
    before = await client_ids(client)
    try:
        await asyncio.gather(*(runner.run([("push", [key], [str(i)])]) for i in range(40)))
        opened = await client_ids(client, command="evalsha") - before
    finally:
        await runner.aclose()
    assert len(await pushed(client, key)) == 40
    assert 1 <= len(opened) <= 3


async def client_ids(client: redis.asyncio.Redis, command: str | None = None) -> set[str]:
    """The ids of the clients connected to Redis (those whose last command was `command`)."""
    clients = await client.client_list()
    return {entry["id"] for entry in clients if command is None or entry["cmd"] == command}
