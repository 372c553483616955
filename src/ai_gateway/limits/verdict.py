"""The verdict on one request from every subject's counts: the Grant or Denial and its quotas,
shared by the in-memory and Redis limiters so both decide alike."""

import random
from collections.abc import Iterator
from dataclasses import dataclass

from ai_gateway.keys.caller import Subject
from ai_gateway.limits.limiter import Denial, Dimension, Grant, Quota

PARALLEL_RETRY_MS = 1_000
"""A guess: nothing tells when a request in flight ends, and most answers take about a second."""


@dataclass(frozen=True, slots=True)
class Count:
    """One limit's use before this request, as the store saw it."""

    used: int = 0
    reset_ms: int = 0
    """Time until the oldest counted use leaves the window (0 when nothing is counted)."""
    wait_ms: int = 0
    """Time until enough use leaves the window for this request to fit (when it does not)."""


@dataclass(frozen=True, slots=True)
class Standing:
    """One subject's counts in every dimension (zero where it sets no limit)."""

    subject: Subject
    requests: Count
    tokens: Count
    parallel: Count


@dataclass(frozen=True, slots=True)
class Check:
    """One limit of one subject applied to this request."""

    dimension: Dimension
    subject: Subject
    limit: int
    count: Count
    cost: int

    @property
    def fits(self) -> bool:
        """Whether the request fits under the limit now."""
        return self.count.used + self.cost <= self.limit

    @property
    def is_too_large(self) -> bool:
        """Whether the request alone is over the limit: no wait helps."""
        return self.cost > self.limit

    @property
    def retry_after_ms(self) -> int:
        """When a retry of a refused request can succeed."""
        if self.is_too_large:
            return 0
        if self.dimension is Dimension.PARALLEL:
            return PARALLEL_RETRY_MS
        return self.count.wait_ms


def new_lease() -> str:
    """A random 128-bit lease id, never derived from anything the caller sent."""
    # Unique, not secret: the PRNG (seeded from the OS, reseeded in every forked worker) costs
    # far less than os.urandom's system call, which profiled at ~6% of a limited request.
    return f"{random.getrandbits(128):032x}"


def checks(standing: Standing, *, tokens: int) -> Iterator[Check]:
    """The limits a subject sets, with what this request costs in each."""
    limits, subject = standing.subject.limits, standing.subject
    if limits.rpm is not None:
        yield Check(Dimension.REQUESTS, subject, limits.rpm, standing.requests, 1)
    if limits.tpm is not None:
        yield Check(Dimension.TOKENS, subject, limits.tpm, standing.tokens, tokens)
    if limits.parallel is not None:
        yield Check(Dimension.PARALLEL, subject, limits.parallel, standing.parallel, 1)


def decide(
    standings: tuple[Standing, ...], *, tokens: int, lease: str, window_ms: int
) -> Grant | Denial:
    """A Grant when every limit of every subject fits, else the Denial (see `denial_of`)."""
    all_checks = [check for standing in standings for check in checks(standing, tokens=tokens)]
    return denial_of(all_checks, window_ms=window_ms) or Grant(
        lease=lease,
        reserved_tokens=tokens,
        requests=quota(all_checks, Dimension.REQUESTS, is_recorded=True, window_ms=window_ms),
        tokens=quota(all_checks, Dimension.TOKENS, is_recorded=True, window_ms=window_ms),
    )


def denial(standings: tuple[Standing, ...], *, tokens: int, window_ms: int) -> Denial | None:
    """The Denial when some limit of some subject refuses the request, else None (for a limiter
    that records an admitted request itself)."""
    all_checks = [check for standing in standings for check in checks(standing, tokens=tokens)]
    return denial_of(all_checks, window_ms=window_ms)


def denial_of(all_checks: list[Check], *, window_ms: int) -> Denial | None:
    """A Denial naming the limit that makes the caller wait longest (a request too large for a
    limit first: no wait helps); None when every limit fits."""
    refused = [check for check in all_checks if not check.fits]
    if not refused:
        return None
    worst = max(refused, key=lambda check: (check.is_too_large, check.retry_after_ms))
    return Denial(
        dimension=worst.dimension,
        subject=worst.subject,
        retry_after_ms=worst.retry_after_ms,
        requests=quota(all_checks, Dimension.REQUESTS, is_recorded=False, window_ms=window_ms),
        tokens=quota(all_checks, Dimension.TOKENS, is_recorded=False, window_ms=window_ms),
        is_too_large=worst.is_too_large,
    )


def quota(
    all_checks: list[Check], dimension: Dimension, *, is_recorded: bool, window_ms: int
) -> Quota | None:
    """The standing of the subject with the least room left in `dimension`, counting this
    request if it was recorded; None when no subject limits the dimension."""
    least: Quota | None = None
    for check in all_checks:
        if check.dimension is not dimension:
            continue
        used = check.count.used + (check.cost if is_recorded else 0)
        # A recorded request is itself counted: with nothing older, it is the one to leave.
        reset_ms = check.count.reset_ms or (window_ms if is_recorded else 0)
        standing = Quota(check.limit, max(0, check.limit - used), reset_ms)
        if least is None or standing.remaining < least.remaining:
            least = standing
    return least
