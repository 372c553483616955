"""MemoryBudgets: budgets counted in this process, for a single replica (the default). A
counter starts from the usage ledger at its first use (so spend survives a restart); the check
and the hold of a reservation run without an await, so they are atomic."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ai_gateway.budgets.seeds import SeedFailed, Seeds
from ai_gateway.budgets.store import Claim, Hold, Overspent, SoftThreshold, Standing, fits
from ai_gateway.errors import ServiceUnavailable
from ai_gateway.limits.verdict import new_lease

UNAVAILABLE = "Budgets cannot be checked right now; please retry shortly."


def unreadable(fail_open: bool) -> Hold:
    """The answer while a counter's start cannot be read: pass uncounted, or a 503."""
    if fail_open:
        return Hold("", (), 0, is_counted=False)
    raise ServiceUnavailable(UNAVAILABLE, code="budgets_unavailable")


@dataclass(slots=True)
class Counter:
    """One subject's spend in one period."""

    spent: int
    ends_at: datetime | None
    held: int = 0
    holds: dict[str, int] = field(default_factory=dict)
    """Lease -> nano-USD held."""
    is_soft_noted: bool = False


class MemoryBudgets:
    """Counters in this process's memory; every replica would count alone."""

    def __init__(
        self,
        seeds: Seeds,
        *,
        soft: SoftThreshold,
        fail_open: bool,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._seeds = seeds
        self._soft = soft
        self._fail_open = fail_open
        self._clock = clock
        self._counters: dict[str, Counter] = {}

    @property
    def counter_count(self) -> int:
        """How many counters are held (for tests of the memory bound)."""
        return len(self._counters)

    async def reserve(self, claims: tuple[Claim, ...], *, cost: int) -> Hold | Overspent:
        """Hold `cost` on every claim if each has room (see BudgetStore.reserve)."""
        try:
            counters = [await self._counter(claim) for claim in claims]
        except SeedFailed:
            return unreadable(self._fail_open)
        for claim, counter in zip(claims, counters, strict=True):
            used = counter.spent + counter.held
            if not fits(used, cost, claim.limit):
                return Overspent(claim, used, cost)
        lease = new_lease()
        for counter in counters:
            counter.held += cost
            counter.holds[lease] = cost
        return Hold(lease, claims, cost)

    def settle(self, hold: Hold, *, cost: int) -> None:
        """Replace the hold with `cost` spent, on each claim still counted; settling twice
        changes nothing."""
        if not hold.is_counted:
            return
        for claim in hold.claims:
            counter = self._counters.get(claim.key)
            if counter is None:
                continue  # its period is over and forgotten
            reserved = counter.holds.pop(hold.lease, None)
            if reserved is None:
                continue
            counter.held -= reserved
            counter.spent += max(cost, 0)
            if not counter.is_soft_noted and counter.spent >= self._soft.limit(claim):
                counter.is_soft_noted = True
                self._soft.reached(claim, counter.spent)

    async def standing(self, claim: Claim) -> Standing:
        """The claim's counter; one not started yet is read from the ledger (and left
        unstarted: reading changes nothing)."""
        counter = self._counters.get(claim.key)
        if counter is None:
            return Standing(await self._seeds.seed(claim), 0)
        return Standing(counter.spent, counter.held)

    async def flush(self) -> None:
        """Nothing to wait for: settles apply at once."""

    async def aclose(self) -> None:
        """Forget every counter."""
        self._counters.clear()

    async def _counter(self, claim: Claim) -> Counter:
        """The claim's counter, started from the ledger at its first use."""
        counter = self._counters.get(claim.key)
        if counter is not None:
            return counter
        spent = await self._seeds.seed(claim)
        counter = self._counters.get(claim.key)  # another request may have made it meanwhile
        if counter is None:
            self._sweep()
            counter = self._counters[claim.key] = Counter(spent, claim.resets_at)
        return counter

    def _sweep(self) -> None:
        """Forget counters of periods that are over and hold nothing (memory stays bounded by
        the subjects with budgets)."""
        now = self._clock()
        for key, counter in list(self._counters.items()):
            if counter.ends_at is not None and counter.ends_at <= now and not counter.holds:
                del self._counters[key]
