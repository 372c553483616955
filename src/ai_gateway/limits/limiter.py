"""The Limiter contract: one atomic check of every limit of a key and its team before the
upstream call (`admit`), and a settle of the tokens actually used when the request ends."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ai_gateway.keys.caller import Subject

WINDOW_MS = 60_000
"""Requests and tokens are counted over the last 60 s (a sliding window, not a fixed minute)."""

LEASE_TTL_MS = 15 * 60_000
"""A parallel lease never settled (a crashed replica) stops counting after 15 minutes."""


class Dimension(StrEnum):
    """What a limit counts."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    PARALLEL = "parallel"


@dataclass(frozen=True, slots=True)
class Quota:
    """One dimension's standing after a check, for the `x-ratelimit-*` headers: the subject with
    the least room left."""

    limit: int
    remaining: int
    reset_ms: int
    """Time until the oldest counted use leaves the window (0 when nothing is counted)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """An admitted request: the lease to settle, the tokens reserved, the standing per
    dimension (None where no subject limits it)."""

    lease: str
    reserved_tokens: int
    requests: Quota | None
    tokens: Quota | None
    is_counted: bool = True
    """False when the store could not be reached and the request passed uncounted (fail-open):
    nothing was reserved and there is nothing to settle."""


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused request: which limit of which subject, and when a retry can succeed."""

    dimension: Dimension
    subject: Subject
    retry_after_ms: int
    requests: Quota | None
    tokens: Quota | None
    is_too_large: bool = False
    """The request alone needs more tokens than the limit allows: no wait helps."""


class Limiter(Protocol):
    """Counts requests, tokens and leases per subject. `admit` checks and records every limit of
    every subject at once (all or nothing); `settle` replaces the reservation with the tokens
    used and ends the lease, off the response path."""

    async def admit(self, subjects: tuple[Subject, ...], *, tokens: int) -> Grant | Denial:
        """Check and, if every limit allows it, record the request."""
        ...

    def settle(self, subjects: tuple[Subject, ...], grant: Grant, *, tokens: int) -> None:
        """Record `tokens` as used instead of the reservation; end the request's lease."""
        ...

    async def aclose(self) -> None:
        """Finish pending settles and release connections."""
        ...
