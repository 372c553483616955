"""LedgerSpend: a subject's spend since a moment, summed from the `usage_ledger` table: what a
budget counter starts from, and what the CLI shows. A row counts its cost; a row without one
counts its reservation when the upstream may have worked for it (answered 200, was left by its
caller, was cut short by a crash, or reported tokens of an unpriced model: then there is no
reservation either, and it counts nothing); a refused or failed request counts nothing. The
gateway's settles charge the same way (budgets/gate.py)."""

from datetime import UTC, datetime
from typing import Final

from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.budgets.period import period_start
from ai_gateway.budgets.store import SoftThreshold, to_nanos, to_usd
from ai_gateway.keys.caller import Scope, Subject
from ai_gateway.keys.records import Spend
from ai_gateway.usage.tables import ledger

KEPT_STATUSES: Final = ("200", "499", "interrupted")
"""Statuses whose reservation stands when no cost is known."""


def charged() -> ColumnElement[float]:
    """What one ledger row charges a budget, in USD (NULL: nothing)."""
    may_have_worked = or_(ledger.c.status.in_(KEPT_STATUSES), ledger.c.prompt_tokens.is_not(None))
    return case(
        (ledger.c.cost_usd.is_not(None), ledger.c.cost_usd),
        (may_have_worked, ledger.c.reserved_cost_usd),
        else_=None,
    )


class LedgerSpend:
    """Spend per key or team from the ledger table."""

    def __init__(self, engine: AsyncEngine, *, soft_threshold: float) -> None:
        self.engine = engine
        self.soft = SoftThreshold(soft_threshold)

    async def spent_since(self, subject: Subject, since: datetime | None) -> int:
        """Nano-USD charged to the subject since `since` (None: ever)."""
        column = ledger.c.key_id if subject.scope is Scope.KEY else ledger.c.team
        query = select(func.sum(charged())).where(column == subject.id)
        if since is not None:
            query = query.where(ledger.c.created_at >= since)
        async with self.engine.connect() as connection:
            total = await connection.scalar(query)
        return to_nanos(float(total or 0.0))

    async def spend(self, subject: Subject) -> Spend:
        """The current period's spend of a subject with a budget (the CLI's view)."""
        budget = subject.budget
        if budget is None:
            return Spend(None, None, None)
        start = period_start(budget.period, datetime.now(UTC))
        spent = await self.spent_since(subject, start)
        limit = to_nanos(budget.limit_usd)
        return Spend(start, round(to_usd(spent), 9), self.soft.is_reached(spent, limit))
