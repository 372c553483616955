"""Outage: whether the limits store is known to be down, so that requests skip it for a short
backoff instead of each waiting out a timeout, and each outage is logged once."""

import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class Outage:
    """The store's reachability as the last calls found it: one warning when an outage starts,
    one info when it ends, and while it lasts one probe per backoff."""

    def __init__(self, *, backoff_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._backoff_s = backoff_s
        self._clock = clock
        self._since: float | None = None
        self._probe_at = 0.0

    def should_skip(self) -> bool:
        """Whether to answer without the store now; past the backoff, the first caller is let
        through as the probe and the rest keep skipping until it answers."""
        if self._since is None:
            return False
        now = self._clock()
        if now < self._probe_at:
            return True
        self._probe_at = now + self._backoff_s
        return False

    def wait_s(self) -> float:
        """Time until the next probe (0 when the store is not known to be down)."""
        if self._since is None:
            return 0.0
        return max(0.0, self._probe_at - self._clock())

    def failed(self, error: Exception) -> None:
        """A call failed: start (or extend) the outage."""
        now = self._clock()
        self._probe_at = now + self._backoff_s
        if self._since is None:
            self._since = now
            # The error's text names host and port at most, never the URL (it may hold a password).
            log.warning(
                "limits_store_unreachable",
                error=type(error).__name__,
                detail=str(error),
                backoff_s=self._backoff_s,
            )

    def succeeded(self) -> None:
        """A call answered: end the outage, if there was one."""
        if self._since is not None:
            log.info("limits_store_recovered", outage_s=round(self._clock() - self._since, 3))
            self._since = None
