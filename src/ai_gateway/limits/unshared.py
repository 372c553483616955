"""UnsharedLimiter: what limits do in a worker of several with no Redis to share counts in. Each
process counting alone would multiply every limit by the process count, silently; so a limited
caller's request is refused with a 503 that says how to fix it (`ai-gateway serve` also refuses
to start that way when the database holds limited keys)."""

from ai_gateway.errors import ServiceUnavailable
from ai_gateway.keys.caller import Subject
from ai_gateway.limits.limiter import Denial, Grant

MESSAGE = (
    "This key has rate limits, and the gateway runs several worker processes without "
    "REDIS_URL, so its limits cannot be counted exactly. Set REDIS_URL or run one worker."
)


class UnsharedLimiter:
    """Refuses every limited request (see the module docstring)."""

    async def admit(self, subjects: tuple[Subject, ...], *, tokens: int) -> Grant | Denial:
        """Refuse: counts kept per process would not be the limits that were set."""
        raise ServiceUnavailable(MESSAGE, code="limits_unavailable")

    def settle(self, subjects: tuple[Subject, ...], grant: Grant, *, tokens: int) -> None:
        """Nothing was admitted, so nothing is settled."""

    async def aclose(self) -> None:
        """Nothing to close."""
