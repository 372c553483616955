"""Seeds: where a counter the store does not hold yet starts, read from the usage ledger once
per counter however many requests ask at the same moment (and the answer reused for a moment:
replicas racing to start a Redis counter all ask), and a ledger that cannot be read skipped for
a short backoff instead of asked by every request."""

import asyncio
import time
from collections.abc import Callable

import structlog

from ai_gateway.budgets.store import Claim, SpendSource

log = structlog.get_logger(__name__)

SEED_BACKOFF_S = 1.0
REUSE_S = 1.0
"""How long a read answers other requests for the same counter."""
MAX_REMEMBERED = 10_000


class SeedFailed(Exception):
    """The ledger could not be read: the counter's start is unknown."""


class Seeds:
    """Reads counters' starting spend from a SpendSource (single-flight per counter)."""

    def __init__(
        self,
        source: SpendSource,
        *,
        backoff_s: float = SEED_BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._backoff_s = backoff_s
        self._clock = clock
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._recent: dict[str, tuple[float, int]] = {}
        """Counter -> (read at, nano-USD)."""
        self._retry_at = 0.0
        self._is_failing = False

    async def seed(self, claim: Claim) -> int:
        """The claim's spend so far this period, per the ledger (nano-USD); SeedFailed while
        the ledger cannot be read."""
        recent = self._recent.get(claim.key)
        if recent is not None and self._clock() - recent[0] < REUSE_S:
            return recent[1]
        pending = self._pending.get(claim.key)
        if pending is None:
            if self._clock() < self._retry_at:
                raise SeedFailed("the usage ledger was unreadable a moment ago")
            pending = asyncio.ensure_future(self._read(claim))
            self._pending[claim.key] = pending
            pending.add_done_callback(lambda done: self._done(claim.key, done))
        return await asyncio.shield(pending)

    def _done(self, key: str, done: "asyncio.Future[int]") -> None:
        """Forget a finished read; its failure is retrieved here, so that a read whose callers
        all left is not reported as an error nobody saw."""
        self._pending.pop(key, None)
        if not done.cancelled():
            done.exception()

    async def _read(self, claim: Claim) -> int:
        """One read of the ledger; a failure starts the backoff (logged once per outage)."""
        try:
            spent = await self._source.spent_since(claim.subject, claim.start)
        except Exception as error:
            self._retry_at = self._clock() + self._backoff_s
            if not self._is_failing:
                self._is_failing = True
                log.warning("budget_ledger_unreadable", error=type(error).__name__)
            raise SeedFailed(type(error).__name__) from error
        if self._is_failing:
            self._is_failing = False
            log.info("budget_ledger_readable")
        if len(self._recent) >= MAX_REMEMBERED:
            self._recent.clear()
        self._recent[claim.key] = (self._clock(), spent)
        return spent
