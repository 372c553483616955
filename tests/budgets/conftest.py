"""Budget stores for the tests: in memory, and on the machine's Redis (a key prefix of its own
per test), over a SpendSource the test controls (the ledger table has tests of its own)."""

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest
import redis.asyncio

from ai_gateway.budgets.memory import MemoryBudgets
from ai_gateway.budgets.redis_store import RedisBudgets
from ai_gateway.budgets.seeds import Seeds
from ai_gateway.budgets.store import SoftThreshold
from ai_gateway.keys.caller import Budget, Limits, Period, Scope, Subject
from ai_gateway.limits.redis_store import redis_client
from tests.services import REDIS_URL, redis_prefix

Store = MemoryBudgets | RedisBudgets
NOW = datetime.now(UTC).replace(hour=15, minute=30, second=0, microsecond=0)
"""The tests' "now": today, mid-afternoon UTC. Today, not a fixed date: Redis expires a period's
counter at an absolute time (the period's end plus `GRACE`), measured by its own clock, so a
period long past would be gone as soon as it is written."""
MIDNIGHT = NOW.replace(hour=0, minute=0)
"""The start of NOW's day."""


@dataclass
class Source:
    """The ledger as a test writes it: nano-USD per subject id; each read is recorded."""

    spent: dict[str, int] = field(default_factory=dict)
    reads: list[tuple[str, datetime | None]] = field(default_factory=list)
    error: Exception | None = None

    async def spent_since(self, subject: Subject, since: datetime | None) -> int:
        self.reads.append((subject.id, since))
        if self.error is not None:
            raise self.error
        return self.spent.get(subject.id, 0)


class Make(Protocol):
    def __call__(self, *, fail_open: bool = False, hold_ttl_ms: int = 60_000) -> Store: ...


@dataclass
class Stores:
    """Builds stores of one kind over one Source, noting soft-limit crossings."""

    kind: str
    source: Source
    crossings: list[Subject]
    make: Make


def subject(scope: Scope = Scope.KEY, usd: float = 1.0, period: Period = Period.DAY) -> Subject:
    """A subject of its own with a budget."""
    return Subject(scope, f"id-{secrets.token_hex(4)}", Limits(), Budget(usd, period))


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    """Stores of one kind; each is closed (and its Redis keys deleted) afterwards."""
    source, crossings = Source(), []
    made: list[Store] = []
    clients: list[redis.asyncio.Redis] = []
    with redis_prefix() as prefix:

        def build(*, fail_open: bool = False, hold_ttl_ms: int = 60_000) -> Store:
            soft = SoftThreshold(0.8, on_reached=crossings.append)
            store: Store
            if request.param == "memory":
                store = MemoryBudgets(Seeds(source), soft=soft, fail_open=fail_open)
            else:
                clients.append(redis_client(REDIS_URL, timeout_s=2.0))
                store = RedisBudgets(
                    clients[-1],
                    Seeds(source),
                    prefix=prefix,
                    soft=soft,
                    fail_open=fail_open,
                    hold_ttl_ms=hold_ttl_ms,
                )
            made.append(store)
            return store

        yield Stores(request.param, source, crossings, build)
        for store in made:
            await store.aclose()
        for client in clients:
            await client.aclose()


async def settled(store: Any) -> None:
    """Every settle so far has been applied (Redis sends them in the background)."""
    await store.flush()
