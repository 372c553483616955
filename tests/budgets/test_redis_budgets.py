"""RedisBudgets beyond the contract: exact across replicas racing for the last of a budget,
holds of a replica that died, amounts past Lua's default number format, counters that expire
after their period, and what budgets do while Redis cannot be reached."""

import asyncio
import socket
import time
from datetime import timedelta

import pytest
import redis.asyncio

from ai_gateway.budgets.gate import claim_of
from ai_gateway.budgets.memory import MemoryBudgets
from ai_gateway.budgets.redis_store import GRACE, RedisBudgets
from ai_gateway.budgets.seeds import Seeds
from ai_gateway.budgets.store import Claim, Hold, Overspent, SoftThreshold, Standing
from ai_gateway.errors import ServiceUnavailable
from ai_gateway.keys.caller import Period, Subject
from ai_gateway.limits.redis_store import redis_client
from tests.budgets.conftest import NOW, Source, subject
from tests.services import REDIS_URL

pytestmark = pytest.mark.anyio

USD = 1_000_000_000
REPLICAS = 6
CALLERS = 25


def claim(who: Subject) -> Claim:
    found = claim_of(who, NOW)
    assert found is not None
    return found


def replica(
    client: redis.asyncio.Redis,
    prefix: str,
    source: Source,
    *,
    hold_ttl_ms: int = 60_000,
    crossings: list[Subject] | None = None,
) -> RedisBudgets:
    on_reached = None if crossings is None else crossings.append
    return RedisBudgets(
        client,
        Seeds(source),
        prefix=prefix,
        soft=SoftThreshold(0.8, on_reached=on_reached),
        fail_open=False,
        hold_ttl_ms=hold_ttl_ms,
    )


async def test_replicas_racing_for_a_nearly_spent_budget_never_overshoot(prefix: str) -> None:
    who = subject(usd=1.0)
    source = Source(spent={who.id: USD - 10 * 7_000_000 - 3})  # room for 10 holds of 0.007
    clients = [redis_client(REDIS_URL, timeout_s=5.0) for _ in range(REPLICAS)]
    replicas = [replica(c, prefix, Source(spent=dict(source.spent))) for c in clients]
    try:
        outcomes = await asyncio.gather(
            *(r.reserve((claim(who),), cost=7_000_000) for r in replicas for _ in range(CALLERS))
        )
        standing = await replicas[0].standing(claim(who))
    finally:
        for made in replicas:
            await made.aclose()
        for opened in clients:
            await opened.aclose()

    holds = [outcome for outcome in outcomes if isinstance(outcome, Hold)]
    assert len(holds) == 10
    assert all(isinstance(o, Overspent) for o in outcomes if not isinstance(o, Hold))
    assert standing.spent + standing.held == USD - 3
    assert standing.spent + standing.held <= USD


async def test_concurrent_settles_and_reserves_keep_the_sum_exact(
    gateway_redis: redis.asyncio.Redis, prefix: str
) -> None:
    who, source = subject(usd=1.0), Source()
    first, second = replica(gateway_redis, prefix, source), replica(gateway_redis, prefix, source)

    async def spend(store: RedisBudgets) -> int:
        outcome = await store.reserve((claim(who),), cost=20_000_000)
        if isinstance(outcome, Overspent):
            return 0
        store.settle(outcome, cost=10_000_000)
        return 1

    admitted = sum(await asyncio.gather(*(spend(s) for s in (first, second) for _ in range(60))))
    await first.flush()
    await second.flush()

    standing = await first.standing(claim(who))
    assert standing == Standing(spent=admitted * 10_000_000, held=0)
    assert 50 <= admitted <= 100
    await first.aclose()
    await second.aclose()


async def test_a_hold_never_settled_counts_as_spent_and_a_late_settle_corrects_it(
    gateway_redis: redis.asyncio.Redis, prefix: str
) -> None:
    who = subject(usd=1.0)
    store = replica(gateway_redis, prefix, Source(), hold_ttl_ms=50)
    stale = await store.reserve((claim(who),), cost=USD // 2)
    assert isinstance(stale, Hold)
    await asyncio.sleep(0.1)

    fresh = await store.reserve((claim(who),), cost=USD // 4)
    after_expiry = await store.standing(claim(who))
    store.settle(stale, cost=USD // 10)
    await store.flush()
    corrected = await store.standing(claim(who))
    await store.aclose()

    assert isinstance(fresh, Hold)
    assert after_expiry == Standing(spent=USD // 2, held=USD // 4)
    assert corrected == Standing(spent=USD // 10, held=USD // 4)


async def test_amounts_past_a_hundred_thousand_dollars_stay_exact(
    gateway_redis: redis.asyncio.Redis, prefix: str
) -> None:
    who = subject(usd=900_000.0, period=Period.TOTAL)
    store = replica(gateway_redis, prefix, Source(spent={who.id: 123_456_789_012_345}))
    cost = 700_000 * USD + 7

    hold = await store.reserve((claim(who),), cost=cost)
    assert isinstance(hold, Hold)
    store.settle(hold, cost=cost - 5)
    await store.flush()

    assert await store.standing(claim(who)) == Standing(123_456_789_012_345 + cost - 5, 0)
    await store.aclose()


async def test_the_soft_limit_is_noted_once_across_replicas(
    gateway_redis: redis.asyncio.Redis, prefix: str
) -> None:
    who, crossings = subject(usd=1.0), []
    stores = [replica(gateway_redis, prefix, Source(), crossings=crossings) for _ in range(3)]

    for store in stores:
        hold = await store.reserve((claim(who),), cost=USD * 3 // 10)
        assert isinstance(hold, Hold)
        store.settle(hold, cost=USD * 3 // 10)
        await store.flush()

    assert crossings == [who]
    for store in stores:
        await store.aclose()


async def test_a_period_counter_expires_after_its_period_and_a_total_one_when_idle(
    gateway_redis: redis.asyncio.Redis, prefix: str
) -> None:
    day, total = subject(usd=1.0), subject(usd=1.0, period=Period.TOTAL)
    store = replica(gateway_redis, prefix, Source())
    await store.reserve((claim(day), claim(total)), cost=1)

    day_expiry = await gateway_redis.pexpiretime(store.keys(claim(day))[0])
    total_ttl = await gateway_redis.pttl(store.keys(claim(total))[1])
    await store.aclose()

    resets_at = claim(day).resets_at
    assert resets_at is not None
    assert day_expiry == int((resets_at + GRACE).timestamp() * 1000)
    assert 44 * 24 * 3600 * 1000 < total_ttl <= 45 * 24 * 3600 * 1000


def refused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize("fail_open", [True, False])
async def test_an_unreachable_redis_follows_the_fail_mode(fail_open: bool, prefix: str) -> None:
    down = redis_client(f"redis://127.0.0.1:{refused_port()}/0", timeout_s=0.2)
    store = RedisBudgets(
        down, Seeds(Source()), prefix=prefix, soft=SoftThreshold(0.8), fail_open=fail_open
    )
    try:
        if fail_open:
            hold = await store.reserve((claim(subject()),), cost=USD)
            assert isinstance(hold, Hold)
            assert hold.is_counted is False
            started = time.monotonic()
            again = await store.reserve((claim(subject()),), cost=USD)  # within the backoff
            assert isinstance(again, Hold)
            assert time.monotonic() - started < 0.05
        else:
            with pytest.raises(ServiceUnavailable, match="Budgets cannot be checked"):
                await store.reserve((claim(subject()),), cost=USD)
    finally:
        await store.aclose()
        await down.aclose()


async def test_all_connections_busy_refuses_that_request_without_an_outage(prefix: str) -> None:
    """No connection free within the timeout (the process overloaded, Redis well): that
    reservation is refused (fail closed), and the next one goes to Redis at once, not skipped
    for an outage's backoff."""
    busy = redis_client(REDIS_URL, timeout_s=0.2)
    store = RedisBudgets(
        busy, Seeds(Source()), prefix=prefix, soft=SoftThreshold(0.8), fail_open=False
    )
    try:
        runner = store._scripts
        held = [await runner._checkout() for _ in range(runner._size)]
        with pytest.raises(ServiceUnavailable, match="Budgets cannot be checked"):
            await store.reserve((claim(subject()),), cost=USD)
        for connection in held:
            runner._checkin(connection)
        hold = await store.reserve((claim(subject()),), cost=USD)
        assert isinstance(hold, Hold)
        assert hold.is_counted
        store.settle(hold, cost=USD)
        await asyncio.wait_for(store.flush(), 2)
    finally:
        await store.aclose()
        await busy.aclose()


async def test_memory_forgets_counters_of_periods_that_are_over() -> None:
    who, clock = subject(usd=1.0), [NOW]
    store = MemoryBudgets(
        Seeds(Source()), soft=SoftThreshold(0.8), fail_open=False, clock=lambda: clock[0]
    )
    hold = await store.reserve((claim(who),), cost=1)
    assert isinstance(hold, Hold)
    store.settle(hold, cost=1)
    tomorrow = claim_of(who, NOW + timedelta(days=1))
    assert tomorrow is not None

    clock[0] = NOW + timedelta(days=1)
    await store.reserve((tomorrow,), cost=1)

    assert store.counter_count == 1
