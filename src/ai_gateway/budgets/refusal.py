"""BudgetExceeded: the 429 of a request a budget refused, naming the key or team, the budget,
its period and when it resets (the Budgets section of docs/errors.md says why a 429 of type
`insufficient_quota`)."""

import math
from datetime import datetime

from ai_gateway.budgets.store import Overspent, to_usd
from ai_gateway.config.constants import SHOULD_RETRY_HEADER
from ai_gateway.errors import RateLimited
from ai_gateway.keys.caller import Period
from ai_gateway.limits.headers import retry_after_headers


class BudgetExceeded(RateLimited):
    """A budget of the caller's key or team has no room for the request."""

    error_type = "insufficient_quota"
    code = "budget_exceeded"


def usd(amount: float) -> str:
    """`$12.50`, `$0.000125`: cents at least, more digits (to the nano-dollar) where they
    matter."""
    text = f"{amount:,.9f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def timestamp(moment: datetime) -> str:
    """`2026-12-04T00:00:00Z`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def budget_refusal(overspent: Overspent, *, now: datetime) -> BudgetExceeded:
    """The 429 for a refused reservation. `x-should-retry: false` always (clients' own retries
    within seconds cannot help); `retry-after` until the period resets, when it does and when
    waiting can help."""
    claim = overspent.claim
    owner = f"{claim.subject.scope.value} {claim.subject.id}"
    budget = claim.budget
    per = "in total" if budget.period is Period.TOTAL else f"per {budget.period.value}"
    headers = {SHOULD_RETRY_HEADER: "false"}
    if overspent.cost > claim.limit:
        message = (
            f"Request too costly for {owner}: it may cost up to {usd(to_usd(overspent.cost))}, "
            f"the budget is {usd(budget.limit_usd)} {per}. Send a shorter request or a lower "
            "max_tokens."
        )
        return BudgetExceeded(message, headers=headers)
    used = f"{usd(to_usd(overspent.used))} used"
    if claim.resets_at is None:
        ending = "It does not reset: raise or remove the budget to continue."
    else:
        ending = f"It resets at {timestamp(claim.resets_at)}."
        wait_ms = math.ceil((claim.resets_at - now).total_seconds() * 1000)
        headers.update(retry_after_headers(max(wait_ms, 1)))
    message = f"Budget exceeded for {owner}: {usd(budget.limit_usd)} {per} ({used}). {ending}"
    return BudgetExceeded(message, headers=headers)
