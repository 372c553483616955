"""RedisBudgets: budgets counted in Redis and shared by every replica. A reservation is one
script call that checks and holds every claim atomically (reserve.lua); a counter Redis does not
hold is started from the usage ledger with a set-if-missing (seed.lua) and the call made again;
settles are queued and sent in batches off the response path (settle.lua)."""

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final

import redis.asyncio
import structlog

from ai_gateway.budgets.memory import unreadable
from ai_gateway.budgets.seeds import SeedFailed, Seeds
from ai_gateway.budgets.store import HOLD_TTL_MS, Claim, Hold, Overspent, SoftThreshold, Standing
from ai_gateway.limits.outage import Outage
from ai_gateway.limits.redis_store import OUTAGE_BACKOFF_S, STORE_ERRORS
from ai_gateway.limits.script_runner import Busy, Call, ScriptRunner, Unsent
from ai_gateway.limits.verdict import new_lease

log = structlog.get_logger(__name__)

GRACE: Final = timedelta(days=2)
"""A period's counter outlives the period by this much (late settles still find it)."""
IDLE_TTL_MS: Final = 45 * 24 * 3600 * 1000
"""A `total` counter unused this long is dropped (and started from the ledger again)."""
SEED_ROUNDS: Final = 3
SETTLE_BATCH: Final = 128
MAX_PENDING_SETTLES: Final = 100_000
"""While Redis is down settles wait here; past this many they are dropped (the holds then
count as spent when they expire)."""
SCRIPTS: Final = ("reserve", "settle", "seed")


def script_text(name: str) -> str:
    """One of the package's Lua scripts."""
    return resources.files("ai_gateway.budgets").joinpath(name).read_text(encoding="utf-8")


def expiry_ms(claim: Claim) -> int:
    """When the claim's counter may be dropped, in Unix ms (0: kept IDLE_TTL_MS past use)."""
    if claim.resets_at is None:
        return 0
    return int((claim.resets_at + GRACE).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class PendingSettle:
    """A settle waiting to be sent: the hold, what the request cost, each claim's soft limit."""

    hold: Hold
    cost: int
    softs: tuple[int, ...]


class RedisBudgets:
    """Counts in Redis, exact across replicas. While Redis (or the ledger a missing counter
    starts from) cannot be read, requests pass uncounted (`fail_open`) or get a 503, and Redis
    is tried again after a short backoff. `client` stays the caller's to close."""

    def __init__(
        self,
        client: "redis.asyncio.Redis",
        seeds: Seeds,
        *,
        prefix: str,
        soft: SoftThreshold,
        fail_open: bool,
        hold_ttl_ms: int = HOLD_TTL_MS,
        outage_backoff_s: float = OUTAGE_BACKOFF_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._seeds = seeds
        self._prefix = prefix
        self._soft = soft
        self._fail_open = fail_open
        self._hold_ttl_ms = hold_ttl_ms
        self._clock = clock
        texts = {name: script_text(f"{name}.lua") for name in SCRIPTS}
        self._scripts = ScriptRunner(client, texts)
        self._outage = Outage(backoff_s=outage_backoff_s)
        self._pending: deque[PendingSettle] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._is_closed = False

    def keys(self, claim: Claim) -> tuple[str, str]:
        """The claim's counter hash and holds zset."""
        base = f"{self._prefix}:budget:{claim.key}"
        return base, f"{base}:holds"

    async def reserve(self, claims: tuple[Claim, ...], *, cost: int) -> Hold | Overspent:
        """Hold `cost` on every claim if each has room: one script call (and, for counters
        Redis lacks, their seeding first)."""
        if self._outage.should_skip():
            return unreadable(self._fail_open)
        lease = new_lease()
        try:
            reply = await self._reserve(claims, lease, cost)
        except SeedFailed:  # the ledger's outage, logged and backed off by Seeds
            return unreadable(self._fail_open)
        except Busy:  # nothing was sent, and Redis is not known to be down
            return unreadable(self._fail_open)
        except Unsent as error:
            self._outage.failed(error)
            return unreadable(self._fail_open)
        except STORE_ERRORS as error:
            self._outage.failed(error)
            self._release(claims, lease, cost)
            return unreadable(self._fail_open)
        except asyncio.CancelledError:
            self._release(claims, lease, cost)
            raise
        self._outage.succeeded()
        if reply[0] == 0:
            return Overspent(claims[int(reply[1]) - 1], int(reply[2]), cost)
        return Hold(lease, claims, cost)

    async def _reserve(self, claims: tuple[Claim, ...], lease: str, cost: int) -> list[int]:
        """The reserve script's reply, after seeding the counters it found missing."""
        keys = [key for claim in claims for key in self.keys(claim)]
        args: list[Any] = [lease, cost, self._hold_ttl_ms, IDLE_TTL_MS]
        for claim in claims:
            args += [claim.limit, expiry_ms(claim)]
        for _ in range(SEED_ROUNDS):
            (reply,) = await self._scripts.run([("reserve", keys, args)])
            if isinstance(reply, Exception):
                raise reply
            if reply[0] != -1:
                return [int(value) for value in reply]
            await self._seed([claims[int(index) - 1] for index in reply[1:]])
        raise SeedFailed("counters vanished while being started")

    async def _seed(self, claims: Sequence[Claim]) -> None:
        """Start missing counters from the ledger (a replica that started one first wins)."""
        calls: list[Call] = []
        for claim in claims:
            spent = await self._seeds.seed(claim)
            args = [spent, expiry_ms(claim), IDLE_TTL_MS]
            calls.append(("seed", [self.keys(claim)[0]], args))
        for reply in await self._scripts.run(calls):
            if isinstance(reply, Exception):
                raise reply

    def settle(self, hold: Hold, *, cost: int) -> None:
        """Queue the settle; a background task sends what is queued, a batch per call."""
        if self._is_closed or not hold.is_counted or len(self._pending) >= MAX_PENDING_SETTLES:
            return
        softs = tuple(self._soft.limit(claim) for claim in hold.claims)
        self._pending.append(PendingSettle(hold, max(cost, 0), softs))
        self._idle.clear()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_forever())

    def _release(self, claims: tuple[Claim, ...], lease: str, cost: int) -> None:
        """After a call whose answer never came, Redis may have held the request: its hold is
        settled to nothing, to be sure (settling an unknown lease changes nothing)."""
        self.settle(Hold(lease, claims, cost), cost=0)

    async def standing(self, claim: Claim) -> Standing:
        """The claim's counter; one Redis lacks is read from the ledger (and left unstarted:
        reading changes nothing)."""
        spent, held = await self._client.hmget(self.keys(claim)[0], ["spent", "held"])
        if spent is None:
            return Standing(await self._seeds.seed(claim), 0)
        return Standing(int(spent), int(held or 0))

    async def flush(self) -> None:
        """Wait until every queued settle has been sent (this waits out an outage)."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Send the settles still queued (one try) and close the store's connections; the
        client is left open."""
        self._is_closed = True
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        while self._pending and await self._send_batch():
            pass
        self._pending.clear()
        self._idle.set()
        await self._scripts.aclose()

    async def _send_forever(self) -> None:
        """Send queued settles until none is left; a failed batch stays queued and is tried
        again after the outage backoff."""
        while self._pending:
            if not await self._send_batch():
                await asyncio.sleep(max(self._outage.wait_s(), 0.05))
        self._idle.set()

    async def _send_batch(self) -> bool:
        """Send the oldest queued settles in one call; whether it went through."""
        batch = [self._pending.popleft() for _ in range(min(len(self._pending), SETTLE_BATCH))]
        try:
            (reply,) = await self._scripts.run([self._settle_call(batch)])
        except Busy:
            self._pending.extendleft(reversed(batch))
            return False
        except STORE_ERRORS as error:
            self._outage.failed(error)
            self._pending.extendleft(reversed(batch))
            return False
        except BaseException:
            self._pending.extendleft(reversed(batch))
            raise
        self._outage.succeeded()
        self._settled(batch, reply)
        return True

    def _settle_call(self, batch: list[PendingSettle]) -> Call:
        """One settle script call for a batch."""
        keys: list[str] = []
        args: list[Any] = []
        for pending in batch:
            hold = pending.hold
            keys += [key for claim in hold.claims for key in self.keys(claim)]
            args += [hold.lease, hold.reserved, pending.cost, len(hold.claims), *pending.softs]
        return ("settle", keys, args)

    def _settled(self, batch: list[PendingSettle], reply: Any) -> None:
        """The claims whose spend just crossed the soft limit are reported; an error reply is
        about the batch itself and would recur, so it is logged and dropped."""
        if isinstance(reply, Exception):
            log.warning("budget_settles_dropped", count=len(batch), error=type(reply).__name__)
            return
        for at in range(0, len(reply), 3):
            settle, claim, spent = (int(value) for value in reply[at : at + 3])
            self._soft.reached(batch[settle - 1].hold.claims[claim - 1], spent)
