"""BudgetGate: a request against the budgets of its key and team. Before the call it reserves
the most the request may cost on its route (the dearest deployment, every completion at its
limit), or refuses it with the 429; when the response has ended, the reservation becomes what
the request cost. A route whose price is unknown reserves nothing: the request is admitted while
the budget has room, and what it cost, unknown, is logged and not counted."""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.api.record import RequestRecord
from ai_gateway.budgets.ledger_spend import LedgerSpend
from ai_gateway.budgets.memory import MemoryBudgets
from ai_gateway.budgets.period import period_end, period_label, period_start
from ai_gateway.budgets.refusal import budget_refusal
from ai_gateway.budgets.seeds import Seeds
from ai_gateway.budgets.store import (
    BudgetStore,
    Claim,
    Hold,
    Overspent,
    SoftThreshold,
    to_nanos,
    to_usd,
)
from ai_gateway.budgets.unshared import UnsharedBudgets
from ai_gateway.config.settings import FailMode, Settings
from ai_gateway.keys.caller import Subject
from ai_gateway.keys.records import Spend
from ai_gateway.routing.route import Route
from ai_gateway.usage.ledger import Pricing

if TYPE_CHECKING:
    import redis.asyncio

log = structlog.get_logger(__name__)

MAX_UNPRICED_LOGGED: Final = 1_000


def claim_of(subject: Subject, now: datetime) -> Claim | None:
    """The subject's budget for the period `now` falls in (None without a budget)."""
    budget = subject.budget
    if budget is None:
        return None
    start = period_start(budget.period, now)
    label = period_label(budget.period, start)
    return Claim(
        subject=subject,
        budget=budget,
        start=start,
        resets_at=period_end(budget.period, start),
        limit=to_nanos(budget.limit_usd),
        key=f"{subject.scope.value}:{subject.id}:{label}",
    )


def may_have_worked(record: RequestRecord) -> bool:
    """Whether the upstream may have done work the request has no cost for: it reported usage
    (of a model without a price), answered 200, or its caller left while it ran."""
    return record.usage is not None or record.is_client_closed or record.status == HTTPStatus.OK


class BudgetGate:
    """Reserves and settles requests against budgets (see the module docstring)."""

    def __init__(
        self,
        store: BudgetStore,
        prices: Pricing,
        *,
        soft: SoftThreshold,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.prices = prices
        self.soft = soft
        self._clock = clock
        self._unpriced: set[tuple[str, str, str]] = set()

    def now(self) -> datetime:
        """The gateway's clock, UTC."""
        return datetime.fromtimestamp(self._clock(), UTC)

    async def reserve(
        self,
        subjects: tuple[Subject, ...],
        route: Route | None,
        *,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> Hold | None:
        """The request's hold on every budget of its subjects (None when none has a budget),
        or the 429 (BudgetExceeded) naming the budget without room."""
        budgeted = [subject for subject in subjects if subject.budget is not None]
        if not budgeted:
            return None
        now = self.now()
        claims = tuple(c for c in (claim_of(s, now) for s in budgeted) if c is not None)
        most = (
            None if route is None else self.prices.max_cost(route, prompt_tokens, completion_tokens)
        )
        outcome = await self.store.reserve(claims, cost=0 if most is None else to_nanos(most))
        if isinstance(outcome, Overspent):
            raise budget_refusal(outcome, now=now)
        return outcome

    def release(self, hold: Hold) -> None:
        """Give a hold back unspent (the request was refused after all)."""
        self.store.settle(hold, cost=0)

    def settle(self, hold: Hold, record: RequestRecord) -> None:
        """Replace the hold with what the request cost (see ledger_spend.py for the rule)."""
        if record.cost_usd is not None:
            cost = to_nanos(record.cost_usd)
        elif may_have_worked(record):
            cost = hold.reserved
            if record.usage is not None:
                self._note_unpriced(hold, record)
        else:
            cost = 0
        self.store.settle(hold, cost=cost)

    async def spend(self, subject: Subject) -> Spend:
        """The current period's spend of a subject with a budget (the admin API's view); a
        store that cannot be read shows it as unknown."""
        claim = claim_of(subject, self.now())
        if claim is None:
            return Spend(None, None, None)
        try:
            standing = await self.store.standing(claim)
        except Exception as error:
            log.warning("budget_spend_unreadable", error=type(error).__name__)
            return Spend(claim.start, None, None)
        reached = standing.spent >= self.soft.limit(claim)
        return Spend(claim.start, round(to_usd(standing.spent), 9), reached)

    async def aclose(self) -> None:
        """Finish pending settles."""
        await self.store.aclose()

    def _note_unpriced(self, hold: Hold, record: RequestRecord) -> None:
        """A budgeted request's cost is unknown: logged once per subject and model."""
        for claim in hold.claims:
            seen = (claim.key, record.provider or "", record.model or "")
            if seen in self._unpriced or len(self._unpriced) >= MAX_UNPRICED_LOGGED:
                continue
            self._unpriced.add(seen)
            log.warning(
                "budget_cost_unknown",
                scope=claim.subject.scope.value,
                id=claim.subject.id,
                provider=record.provider,
                model=record.model,
            )


def budget_store(
    settings: Settings,
    client: "redis.asyncio.Redis | None",
    engine: AsyncEngine,
    soft: SoftThreshold,
) -> BudgetStore:
    """Redis when several processes share budgets; memory for one; a refusal for several
    without Redis (see budgets/unshared.py). Counters start from the ledger in `engine`."""
    fail_open = settings.limits_fail_mode is FailMode.OPEN
    seeds = Seeds(LedgerSpend(engine, soft_threshold=soft.fraction))
    if client is not None:
        from ai_gateway.budgets.redis_store import RedisBudgets  # redis-py only when used

        return RedisBudgets(
            client, seeds, prefix=settings.redis_prefix, soft=soft, fail_open=fail_open
        )
    if settings.ai_gateway_workers > 1:
        return UnsharedBudgets()
    return MemoryBudgets(seeds, soft=soft, fail_open=fail_open)


def budget_gate(
    settings: Settings,
    client: "redis.asyncio.Redis | None",
    engine: AsyncEngine,
    prices: Pricing,
) -> BudgetGate:
    """The gateway's budgets: the store the settings call for, the prices, the soft threshold
    (`BUDGET_SOFT_THRESHOLD`; set `gate.soft.on_reached` to count its crossings)."""
    soft = SoftThreshold(settings.budget_soft_threshold)
    return BudgetGate(budget_store(settings, client, engine, soft), prices, soft=soft)
