"""ScriptRunner against the test Redis: callers share its connections in turn, a caller that
stops waiting is passed over without losing the connection, a wait that runs out is Busy, and
no more connections are made than its size."""

import asyncio

import pytest
import redis.asyncio
import redis.exceptions

from ai_gateway.limits.redis_store import redis_client
from ai_gateway.limits.script_runner import Busy, ScriptRunner, Unsent
from tests.services import REDIS_URL

pytestmark = pytest.mark.anyio

PUSH = "return redis.call('RPUSH', KEYS[1], ARGV[1])"
CALLERS = 5
ROUNDS = 6


async def pushed(client: redis.asyncio.Redis, key: str) -> list[str]:
    return [value.decode() for value in await client.lrange(key, 0, -1)]  # type: ignore[misc]


async def test_callers_that_call_again_at_once_queue_behind_those_waiting(
    gateway_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """One connection, five callers each calling again as soon as a call returns: a returning
    connection goes to the caller waiting longest, never to the one that just gave it back (it
    would take every turn, and the others would wait out their timeout)."""
    runner = ScriptRunner(gateway_redis, {"push": PUSH}, size=1)
    key = f"{prefix}:order"

    async def caller(name: str) -> None:
        for _ in range(ROUNDS):
            await runner.run([("push", [key], [name])])

    try:
        await asyncio.gather(*(caller(str(index)) for index in range(CALLERS)))
    finally:
        await runner.aclose()
    order = await pushed(gateway_redis, key)
    assert len(order) == CALLERS * ROUNDS
    for start in range(0, len(order), CALLERS):
        assert sorted(order[start : start + CALLERS]) == [str(i) for i in range(CALLERS)]


async def test_a_caller_that_stops_waiting_is_passed_over(
    gateway_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """A waiting caller cancelled (its request ended) leaves its place: the connection goes to
    the next caller, and nothing is lost."""
    runner = ScriptRunner(gateway_redis, {"push": PUSH}, size=1)
    key = f"{prefix}:skip"
    try:
        first = asyncio.ensure_future(runner.run([("push", [key], ["first"])]))
        gone = asyncio.ensure_future(runner.run([("push", [key], ["gone"])]))
        last = asyncio.ensure_future(runner.run([("push", [key], ["last"])]))
        await asyncio.sleep(0)  # `first` holds the connection; the two others wait
        assert len(runner._waiting) == 2
        gone.cancel()
        async with asyncio.timeout(2):
            await asyncio.gather(first, last)
            await runner.run([("push", [key], ["after"])])
        assert gone.cancelled()
    finally:
        await runner.aclose()
    assert await pushed(gateway_redis, key) == ["first", "last", "after"]


async def test_a_connection_handed_to_a_caller_that_left_goes_to_the_next(
    gateway_redis: redis.asyncio.Redis,
) -> None:
    """The connection is handed over in the same turn as the waiting caller is cancelled: the
    caller leaves without it, and it is not lost."""
    runner = ScriptRunner(gateway_redis, {"push": PUSH}, size=1)
    try:
        held = await runner._checkout()
        late = asyncio.ensure_future(runner._checkout())
        await asyncio.sleep(0)  # `late` waits
        runner._checkin(held)  # handed to `late`...
        late.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await late
        assert runner._idle == [held]
        assert await runner._checkout() is held
    finally:
        await runner.aclose()


async def test_a_wait_that_runs_out_is_busy_and_loses_nothing(prefix: str) -> None:
    """Every connection busy for the whole wait (the client's timeout): Busy, which is Unsent
    (nothing ran); the connection still serves the next caller."""
    client = redis_client(REDIS_URL, timeout_s=0.1)
    runner = ScriptRunner(client, {"push": PUSH}, size=1)
    key = f"{prefix}:busy"
    try:
        held = await runner._checkout()
        with pytest.raises(Busy) as caught:
            await runner.run([("push", [key], ["late"])])
        assert isinstance(caught.value, Unsent)
        assert not runner._waiting or runner._waiting[0].cancelled()
        runner._checkin(held)
        await runner.run([("push", [key], ["next"])])
        assert await pushed(client, key) == ["next"]
    finally:
        await runner.aclose()
        await client.aclose()


@pytest.mark.parametrize("max_idle_s", [0.05, 60.0])
async def test_a_connection_idle_past_its_limit_is_opened_afresh(
    gateway_redis: redis.asyncio.Redis, prefix: str, max_idle_s: float
) -> None:
    """A held connection closed under it while idle (here by Redis, as a proxy's or Redis's
    own idle timeout would): once idle past `max_idle_s` it is opened again before the next
    call, which succeeds; within the limit it is used as it is, and the call fails."""
    runner = ScriptRunner(gateway_redis, {"push": PUSH}, size=1, max_idle_s=max_idle_s)
    key = f"{prefix}:idle"
    try:
        await runner.run([("push", [key], ["first"])])
        (held,) = runner._held
        await held.send_command("CLIENT", "ID")
        runner_id = await held.read_response()
        assert await gateway_redis.client_kill_filter(_id=runner_id) == 1
        await asyncio.sleep(0.1)
        if max_idle_s < 0.1:
            await runner.run([("push", [key], ["after"])])
            assert await pushed(gateway_redis, key) == ["first", "after"]
        else:
            with pytest.raises(redis.exceptions.ConnectionError):
                await runner.run([("push", [key], ["after"])])
    finally:
        await runner.aclose()


async def test_callers_still_waiting_at_close_are_told(gateway_redis: redis.asyncio.Redis) -> None:
    runner = ScriptRunner(gateway_redis, {"push": PUSH}, size=1)
    await runner._checkout()
    waiting = asyncio.ensure_future(runner._checkout())
    await asyncio.sleep(0)
    await runner.aclose()
    with pytest.raises(Unsent):
        await waiting


async def test_no_more_connections_are_made_than_the_size(
    gateway_redis: redis.asyncio.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers beyond the size wait for a connection rather than open one of their own."""
    pool = gateway_redis.connection_pool
    made = []
    make = pool.make_connection

    def counted() -> object:
        connection = make()
        made.append(connection)
        return connection

    monkeypatch.setattr(pool, "make_connection", counted)
    runner = ScriptRunner(gateway_redis, {"push": PUSH}, size=3)
    key = f"{prefix}:size"
    try:
        await asyncio.gather(*(runner.run([("push", [key], [str(i)])]) for i in range(40)))
        opened = len(made)
    finally:
        await runner.aclose()
    assert opened == 3
    assert len(await pushed(gateway_redis, key)) == 40
