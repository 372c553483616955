"""The budget store contract, run against both stores: in memory, and on the machine's real
Redis. Amounts are nano-USD; a budget of $1 is 1_000_000_000."""

import asyncio
from datetime import timedelta

import pytest

from ai_gateway.budgets.gate import claim_of
from ai_gateway.budgets.store import Claim, Hold, Overspent, Standing
from ai_gateway.errors import ServiceUnavailable
from ai_gateway.keys.caller import Period, Scope, Subject
from tests.budgets.conftest import NOW, Stores, settled, subject

pytestmark = pytest.mark.anyio

USD = 1_000_000_000


def claim(who: Subject, *, days: int = 0) -> Claim:
    found = claim_of(who, NOW + timedelta(days=days))
    assert found is not None
    return found


def held(outcome: Hold | Overspent) -> Hold:
    assert isinstance(outcome, Hold), outcome
    return outcome


def refused(outcome: Hold | Overspent) -> Overspent:
    assert isinstance(outcome, Overspent), outcome
    return outcome


async def test_a_reservation_within_the_budget_is_held(stores: Stores) -> None:
    store, key = stores.make(), claim(subject(usd=1.0))

    hold = held(await store.reserve((key,), cost=USD // 4))

    assert (hold.reserved, hold.claims, hold.is_counted) == (USD // 4, (key,), True)
    assert await store.standing(key) == Standing(spent=0, held=USD // 4)


async def test_the_whole_budget_fits_and_then_nothing_more(stores: Stores) -> None:
    store, key = stores.make(), claim(subject(usd=1.0))

    held(await store.reserve((key,), cost=USD))

    assert refused(await store.reserve((key,), cost=0)).used == USD
    assert refused(await store.reserve((key,), cost=1)).cost == 1


async def test_a_reservation_is_all_or_nothing_across_key_and_team(stores: Stores) -> None:
    store = stores.make()
    key, team = claim(subject(usd=1.0)), claim(subject(Scope.TEAM, usd=0.5))

    refusal = refused(await store.reserve((key, team), cost=USD * 6 // 10))

    assert (refusal.claim, refusal.used) == (team, 0)
    assert await store.standing(key) == Standing(0, 0)
    assert await store.standing(team) == Standing(0, 0)


async def test_holds_count_against_later_reservations(stores: Stores) -> None:
    store, key = stores.make(), claim(subject(usd=1.0))
    held(await store.reserve((key,), cost=USD * 6 // 10))

    refusal = refused(await store.reserve((key,), cost=USD // 2))

    assert refusal.used == USD * 6 // 10


async def test_a_settle_replaces_the_hold_with_the_cost_once(stores: Stores) -> None:
    store, key = stores.make(), claim(subject(usd=1.0))
    hold = held(await store.reserve((key,), cost=USD // 2))

    store.settle(hold, cost=USD // 10)
    store.settle(hold, cost=USD // 10)
    await settled(store)

    assert await store.standing(key) == Standing(spent=USD // 10, held=0)
    held(await store.reserve((key,), cost=USD * 9 // 10))


async def test_a_hold_given_back_costs_nothing(stores: Stores) -> None:
    store, key = stores.make(), claim(subject(usd=1.0))
    hold = held(await store.reserve((key,), cost=USD))

    store.settle(hold, cost=0)
    await settled(store)

    assert await store.standing(key) == Standing(0, 0)


async def test_a_settle_may_spend_past_the_budget_and_then_refuses_everything(
    stores: Stores,
) -> None:
    store, key = stores.make(), claim(subject(usd=1.0))
    hold = held(await store.reserve((key,), cost=USD // 2))

    store.settle(hold, cost=USD * 3 // 2)  # the estimate was low
    await settled(store)

    assert refused(await store.reserve((key,), cost=0)).used == USD * 3 // 2


async def test_a_counter_starts_from_the_ledger_once(stores: Stores) -> None:
    store, who = stores.make(), subject(usd=1.0)
    stores.source.spent[who.id] = USD * 7 // 10
    key = claim(who)

    outcomes = await asyncio.gather(*(store.reserve((key,), cost=USD // 10) for _ in range(5)))

    assert sum(isinstance(outcome, Hold) for outcome in outcomes) == 3
    assert stores.source.reads == [(who.id, NOW.replace(hour=0, minute=0))]


async def test_a_new_period_is_a_new_counter_from_the_ledger(stores: Stores) -> None:
    store, who = stores.make(), subject(usd=1.0, period=Period.DAY)
    today, tomorrow = claim(who), claim(who, days=1)
    held(await store.reserve((today,), cost=USD))

    hold = held(await store.reserve((tomorrow,), cost=USD))

    assert hold.claims == (tomorrow,)
    assert stores.source.reads[-1] == (who.id, tomorrow.start)
    assert await store.standing(today) == Standing(0, USD)


async def test_a_total_budget_is_read_from_the_whole_ledger(stores: Stores) -> None:
    store, who = stores.make(), subject(usd=1.0, period=Period.TOTAL)
    stores.source.spent[who.id] = USD

    refusal = refused(await store.reserve((claim(who, days=400),), cost=0))

    assert (refusal.used, refusal.claim.start, refusal.claim.resets_at) == (USD, None, None)
    assert stores.source.reads == [(who.id, None)]


async def test_the_soft_limit_is_noted_once_per_period(stores: Stores) -> None:
    store, who = stores.make(), subject(usd=1.0)

    for days, costs in ((0, (USD // 2, USD * 3 // 10, USD // 10)), (1, (USD * 8 // 10,))):
        for cost in costs:
            store.settle(held(await store.reserve((claim(who, days=days),), cost=cost)), cost=cost)
            await settled(store)

    assert stores.crossings == [who, who]


async def test_a_counter_started_past_the_soft_limit_is_noted_at_its_first_settle(
    stores: Stores,
) -> None:
    store, who = stores.make(), subject(usd=1.0)
    stores.source.spent[who.id] = USD * 9 // 10

    store.settle(held(await store.reserve((claim(who),), cost=1)), cost=1)
    await settled(store)

    assert stores.crossings == [who]


async def test_an_unreadable_ledger_passes_uncounted_when_failing_open(stores: Stores) -> None:
    store = stores.make(fail_open=True)
    stores.source.error = OSError("database down")

    hold = held(await store.reserve((claim(subject()),), cost=USD))

    assert hold.is_counted is False
    store.settle(hold, cost=USD)


async def test_an_unreadable_ledger_is_a_503_when_failing_closed(stores: Stores) -> None:
    store = stores.make(fail_open=False)
    stores.source.error = OSError("database down")

    with pytest.raises(ServiceUnavailable) as caught:
        await store.reserve((claim(subject()),), cost=USD)

    assert caught.value.code == "budgets_unavailable"
    assert caught.value.status_code == 503
