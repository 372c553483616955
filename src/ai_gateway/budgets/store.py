"""The budget store contract: a request's most cost reserved against every budget of its key
and team at once (`reserve`, all or nothing), then replaced by what it cost (`settle`). Amounts
are integer nano-USD. A counter the store does not hold yet (a new period, a restart, a Redis
key gone) starts from the usage ledger's sum for the period (`SpendSource`)."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

import structlog

from ai_gateway.keys.caller import Budget, Subject

log = structlog.get_logger(__name__)

NANOS_PER_USD: Final = 1_000_000_000
HOLD_TTL_MS: Final = 15 * 60_000
"""A reservation never settled (its replica crashed) counts as spent after 15 minutes."""


def to_nanos(usd: float) -> int:
    """USD as whole nano-USD, rounded up (float noise below a thousandth of a nano-USD aside),
    so that nothing is counted as free."""
    nanos = usd * NANOS_PER_USD
    nearest = round(nanos)
    return nearest if abs(nanos - nearest) < 1e-3 else math.ceil(nanos)


def to_usd(nanos: int) -> float:
    """Nano-USD as USD."""
    return nanos / NANOS_PER_USD


@dataclass(frozen=True, slots=True)
class Claim:
    """One subject's budget for the period a request falls in."""

    subject: Subject
    budget: Budget
    start: datetime | None
    """The period's start (None for `total`)."""
    resets_at: datetime | None
    """The next period's start (None for `total`)."""
    limit: int
    """The budget in nano-USD."""
    key: str
    """The counter's name: `key:<id>:day:20261203`, `team:<id>:total`, ..."""


@dataclass(frozen=True, slots=True)
class Hold:
    """An admitted request's reservation: the lease to settle, the claims it holds, the amount
    held on each (nano-USD)."""

    lease: str
    claims: tuple[Claim, ...]
    reserved: int
    is_counted: bool = True
    """False when the store could not be read and the request passed uncounted (fail-open)."""


@dataclass(frozen=True, slots=True)
class Overspent:
    """A refused reservation: the claim it did not fit, what that claim had used (spent and
    held) and what the request would have reserved."""

    claim: Claim
    used: int
    cost: int


@dataclass(frozen=True, slots=True)
class Standing:
    """A counter: settled spend and reservations still held (nano-USD)."""

    spent: int
    held: int


class SpendSource(Protocol):
    """What a subject spent since a moment, as the usage ledger has it (budgets/ledger_spend.py)."""

    async def spent_since(self, subject: Subject, since: datetime | None) -> int:
        """Nano-USD charged to the subject since `since` (None: ever)."""
        ...


class BudgetStore(Protocol):
    """Counters of spend per subject and period."""

    async def reserve(self, claims: tuple[Claim, ...], *, cost: int) -> Hold | Overspent:
        """Hold `cost` on every claim if each has room for it (all or nothing). A claim has
        room while spent + held + cost stays within its limit and spent + held is below it:
        an exhausted budget refuses even a request of unknown (zero) cost."""
        ...

    def settle(self, hold: Hold, *, cost: int) -> None:
        """Replace the hold with `cost` as spent (once; off the response path)."""
        ...

    async def standing(self, claim: Claim) -> Standing:
        """The claim's counter (read from the ledger if the store has none yet)."""
        ...

    async def aclose(self) -> None:
        """Finish pending settles and release connections."""
        ...


def fits(used: int, cost: int, limit: int) -> bool:
    """Whether a claim that has used `used` has room for `cost` more."""
    return used < limit and used + cost <= limit


class SoftThreshold:
    """The share of a budget past which the gateway warns, once per subject and period:
    `budget_soft_limit_reached` in the log, and `on_reached` (e.g. a metric) called."""

    def __init__(
        self, fraction: float, on_reached: Callable[[Subject], None] | None = None
    ) -> None:
        self.fraction = fraction
        self.on_reached = on_reached

    def limit(self, claim: Claim) -> int:
        """The claim's soft limit in nano-USD."""
        return math.ceil(claim.limit * self.fraction)

    def is_reached(self, spent: int, limit: int) -> bool:
        """Whether `spent` is past the soft share of `limit` (nano-USD)."""
        return spent >= math.ceil(limit * self.fraction)

    def reached(self, claim: Claim, spent: int) -> None:
        """A claim's spend has just crossed its soft limit (the caller makes sure it is the
        first time this period)."""
        subject = claim.subject
        log.warning(
            "budget_soft_limit_reached",
            scope=subject.scope.value,
            id=subject.id,
            period=claim.budget.period.value,
            limit_usd=claim.budget.limit_usd,
            spent_usd=round(to_usd(spent), 9),
            threshold=self.fraction,
        )
        if self.on_reached is not None:
            try:
                self.on_reached(subject)
            except Exception:
                log.warning("budget_soft_limit_hook_failed", exc_info=True)
