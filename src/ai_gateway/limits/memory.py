"""MemoryLimiter: the limits counted in this process, for a single replica (the default)."""

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ai_gateway.keys.caller import Scope, Subject
from ai_gateway.limits.limiter import LEASE_TTL_MS, WINDOW_MS, Denial, Grant
from ai_gateway.limits.verdict import Count, Standing, decide, new_lease

SubjectId = tuple[Scope, str]


def ceil_ms(us: int) -> int:
    """Microseconds as whole milliseconds, rounded up (so that waiting them is enough)."""
    return -(-us // 1000)


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One admitted request's token charge: when, and how many (the estimate, then the use)."""

    at_us: int
    tokens: int


@dataclass(slots=True)
class Tally:
    """One subject's uses still counted: admissions, token charges by lease, open leases."""

    requests: deque[int] = field(default_factory=deque)
    charges: OrderedDict[str, TokenEntry] = field(default_factory=OrderedDict)
    charged: int = 0
    leases: OrderedDict[str, int] = field(default_factory=OrderedDict)
    """Lease -> expiry; admitted in time order with one TTL, so the oldest expires first."""

    @property
    def is_empty(self) -> bool:
        """Whether nothing is counted: the state can be dropped."""
        return not (self.requests or self.charges or self.leases)

    def prune(self, *, now_us: int, window_us: int) -> None:
        """Forget uses that left the window and leases that expired."""
        cutoff = now_us - window_us
        while self.requests and self.requests[0] <= cutoff:
            self.requests.popleft()
        while self.charges:
            lease, entry = next(iter(self.charges.items()))
            if entry.at_us > cutoff:
                break
            del self.charges[lease]
            self.charged -= entry.tokens
        while self.leases and next(iter(self.leases.values())) <= now_us:
            self.leases.popitem(last=False)

    def requests_count(self, *, limit: int, now_us: int, window_us: int) -> Count:
        """Admissions in the window, and when enough leave for one more."""
        used = len(self.requests)
        reset_ms = ceil_ms(self.requests[0] + window_us - now_us) if used else 0
        wait_ms = 0
        if 1 <= limit < used + 1:
            wait_ms = ceil_ms(self.requests[used - limit] + window_us - now_us)
        return Count(used, reset_ms, wait_ms)

    def tokens_count(self, *, limit: int, cost: int, now_us: int, window_us: int) -> Count:
        """Tokens charged in the window, and when enough leave for `cost` more."""
        entries = iter(self.charges.values())
        oldest = next(entries, None)
        reset_ms = ceil_ms(oldest.at_us + window_us - now_us) if oldest else 0
        wait_ms = 0
        if cost <= limit < self.charged + cost:
            freeing_us = self.freeing_us(self.charged + cost - limit, now_us=now_us)
            wait_ms = ceil_ms(freeing_us + window_us - now_us)
        return Count(self.charged, reset_ms, wait_ms)

    def freeing_us(self, need: int, *, now_us: int) -> int:
        """When the charge was made whose leaving frees `need` tokens, oldest first."""
        freed = 0
        for entry in self.charges.values():
            freed += entry.tokens
            if freed >= need:
                return entry.at_us
        # Unreachable: `charged` is the sum of the charges and `need` is at most `charged`.
        return now_us  # pragma: no cover

    def record(
        self, subject: Subject, *, lease: str, tokens: int, now_us: int, ttl_us: int
    ) -> None:
        """Count an admitted request in every dimension the subject limits."""
        limits = subject.limits
        if limits.rpm is not None:
            self.requests.append(now_us)
        if limits.tpm is not None:
            self.charges[lease] = TokenEntry(now_us, tokens)
            self.charged += tokens
        if limits.parallel is not None:
            self.leases[lease] = now_us + ttl_us

    def settle(self, *, lease: str, tokens: int, cutoff_us: int) -> None:
        """Charge `tokens` instead of the estimate (while counted) and end the lease."""
        entry = self.charges.get(lease)
        if entry is not None and entry.at_us > cutoff_us:
            self.charges[lease] = TokenEntry(entry.at_us, tokens)
            self.charged += tokens - entry.tokens
        self.leases.pop(lease, None)


class MemoryLimiter:
    """Counts in this process's memory: exact and fast, but every replica counts alone."""

    def __init__(
        self,
        *,
        window_ms: int = WINDOW_MS,
        lease_ttl_ms: int = LEASE_TTL_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_ms = window_ms
        self._window_us = window_ms * 1000
        self._ttl_us = lease_ttl_ms * 1000
        self._clock = clock
        self._tallies: dict[SubjectId, Tally] = {}
        self._sweep_at_us = 0

    @property
    def subject_count(self) -> int:
        """How many subjects hold state (for tests of the memory bound)."""
        return len(self._tallies)

    async def admit(self, subjects: tuple[Subject, ...], *, tokens: int) -> Grant | Denial:
        """Check and, if every limit allows it, record the request (atomic: no await inside)."""
        now_us = self._now_us()
        self._sweep(now_us)
        limited = tuple(subject for subject in subjects if subject.limits.is_limited)
        cost = max(0, tokens)
        standings = tuple(self._standing(subject, cost=cost, now_us=now_us) for subject in limited)
        lease = new_lease()
        verdict = decide(standings, tokens=cost, lease=lease, window_ms=self._window_ms)
        if isinstance(verdict, Grant):
            for subject in limited:
                tally = self._tallies.setdefault((subject.scope, subject.id), Tally())
                tally.record(subject, lease=lease, tokens=cost, now_us=now_us, ttl_us=self._ttl_us)
        return verdict

    def settle(self, subjects: tuple[Subject, ...], grant: Grant, *, tokens: int) -> None:
        """Record `tokens` as used instead of the reservation; end the request's lease."""
        now_us = self._now_us()
        for subject in subjects:
            key = (subject.scope, subject.id)
            tally = self._tallies.get(key)
            if tally is None:
                continue
            tally.settle(
                lease=grant.lease, tokens=max(0, tokens), cutoff_us=now_us - self._window_us
            )
            tally.prune(now_us=now_us, window_us=self._window_us)
            if tally.is_empty:
                del self._tallies[key]

    async def flush(self) -> None:
        """Nothing to wait for: settles apply at once."""

    async def aclose(self) -> None:
        """Forget every count."""
        self._tallies.clear()

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    def _standing(self, subject: Subject, *, cost: int, now_us: int) -> Standing:
        tally = self._tallies.get((subject.scope, subject.id))
        if tally is None:
            return Standing(subject, Count(), Count(), Count())
        window_us, limits = self._window_us, subject.limits
        tally.prune(now_us=now_us, window_us=window_us)
        requests = tokens = Count()
        if limits.rpm is not None:
            requests = tally.requests_count(limit=limits.rpm, now_us=now_us, window_us=window_us)
        if limits.tpm is not None:
            tokens = tally.tokens_count(
                limit=limits.tpm, cost=cost, now_us=now_us, window_us=window_us
            )
        return Standing(subject, requests, tokens, Count(used=len(tally.leases)))

    def _sweep(self, now_us: int) -> None:
        """Once a window, drop the state of subjects that count nothing any more, so that
        memory stays bounded by the subjects active in the last window."""
        if now_us < self._sweep_at_us:
            return
        self._sweep_at_us = now_us + self._window_us
        for key, tally in list(self._tallies.items()):
            tally.prune(now_us=now_us, window_us=self._window_us)
            if tally.is_empty:
                del self._tallies[key]
