"""UnsharedBudgets: what budgets do in a worker of several with no Redis to share counts in.
Each process counting alone would let the key spend its budget once per process, so a request
counted against a budget is refused with a 503 that says how to fix it (`ai-gateway serve`
also refuses to start that way when the database holds budgets)."""

from ai_gateway.budgets.store import Claim, Hold, Overspent, Standing
from ai_gateway.errors import ServiceUnavailable

MESSAGE = (
    "This key has a budget, and the gateway runs several worker processes without REDIS_URL, "
    "so its spend cannot be counted exactly. Set REDIS_URL or run one worker."
)


class UnsharedBudgets:
    """Refuses every request counted against a budget (see the module docstring)."""

    async def reserve(self, claims: tuple[Claim, ...], *, cost: int) -> Hold | Overspent:
        """Refuse: spend kept per process would not be the budget that was set."""
        raise ServiceUnavailable(MESSAGE, code="budgets_unavailable")

    def settle(self, hold: Hold, *, cost: int) -> None:
        """Nothing was reserved, so nothing is settled."""

    async def standing(self, claim: Claim) -> Standing:
        """No counter is kept here."""
        raise ServiceUnavailable(MESSAGE, code="budgets_unavailable")

    async def aclose(self) -> None:
        """Nothing to close."""
