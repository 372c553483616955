"""MemoryLimiter: the limits counted in this process, for a single replica (the default).

An admitted request is checked and recorded inline, subject by subject; only a refusal goes
through the generic verdict (verdict.py), so that its Denial is the Redis limiter's."""

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ai_gateway.keys.caller import Limits, Scope, Subject
from ai_gateway.limits.limiter import LEASE_TTL_MS, WINDOW_MS, Denial, Grant, Quota
from ai_gateway.limits.verdict import Count, Standing, denial, new_lease

SubjectId = tuple[Scope, str]

SCAN_LIMIT = 1024
"""The most token charges a refusal reads to find when enough leave (admit.lua's too)."""

Room = tuple[int, int, int]
"""One subject's standing in one dimension once the request is recorded, as Quota's fields
(limit, remaining, reset_ms): a tuple, since only the least room becomes a Quota."""


def ceil_ms(us: int) -> int:
    """Microseconds as whole milliseconds, rounded up (so that waiting them is enough)."""
    return -(-us // 1000)


def least(rooms: list[Room]) -> Quota | None:
    """The Quota of the subject with the least room left (the first of equals); None for none."""
    if not rooms:
        return None
    smallest = rooms[0]
    for room in rooms:
        if room[1] < smallest[1]:
            smallest = room
    return Quota(*smallest)


@dataclass(slots=True)
class Tally:
    """One subject's uses still counted: admissions, token charges, open leases."""

    requests: deque[int] = field(default_factory=deque)
    """Admission times, oldest first."""
    charged_at: deque[tuple[int, str]] = field(default_factory=deque)
    """(time, lease) of each token charge, oldest first: what leaves the window next."""
    charges: dict[str, int] = field(default_factory=dict)
    """Lease -> tokens charged (the estimate, then the use), for the settle. A deque and a dict
    cost less than half of one OrderedDict both ordered by time and keyed by lease."""
    charged: int = 0
    leases: OrderedDict[str, int] = field(default_factory=OrderedDict)
    """Lease -> expiry; admitted in time order with one TTL, so the oldest expires first."""

    @property
    def is_empty(self) -> bool:
        """Whether nothing is counted: the state can be dropped."""
        return not (self.requests or self.charged_at or self.leases)

    def prune(self, *, now_us: int, window_us: int) -> None:
        """Forget uses that left the window and leases that expired."""
        cutoff = now_us - window_us
        requests, charged_at, leases = self.requests, self.charged_at, self.leases
        while requests and requests[0] <= cutoff:
            requests.popleft()
        while charged_at and charged_at[0][0] <= cutoff:
            self.charged -= self.charges.pop(charged_at.popleft()[1])
        while leases and next(iter(leases.values())) <= now_us:
            leases.popitem(last=False)

    def fits(self, limits: Limits, cost: int) -> bool:
        """Whether one more request of `cost` tokens fits under every limit set (the quick
        look; a refusal's details come from `standing`)."""
        return (
            (limits.rpm is None or len(self.requests) < limits.rpm)
            and (limits.tpm is None or self.charged + cost <= limits.tpm)
            and (limits.parallel is None or len(self.leases) < limits.parallel)
        )

    def count_request(self, limit: int, *, now_us: int, window_us: int) -> Room:
        """Count an admission; the room left after it."""
        requests = self.requests
        requests.append(now_us)
        # Pruned, the oldest is still in the window: its reset is at least 1 ms.
        return limit, limit - len(requests), ceil_ms(requests[0] + window_us - now_us)

    def charge(self, lease: str, tokens: int, *, limit: int, now_us: int, window_us: int) -> Room:
        """Charge an admission's estimate; the room left after it."""
        self.charged_at.append((now_us, lease))
        self.charges[lease] = tokens
        self.charged += tokens
        return limit, limit - self.charged, ceil_ms(self.charged_at[0][0] + window_us - now_us)

    def settle(self, *, lease: str, tokens: int) -> None:
        """Charge `tokens` instead of the estimate and end the lease. A charge already out of
        the window may change too: its next prune removes what it then holds, so nothing counts
        it, and prune runs before every read."""
        charged = self.charges.get(lease)
        if charged is not None:
            self.charges[lease] = tokens
            self.charged += tokens - charged
        self.leases.pop(lease, None)

    def standing(self, subject: Subject, *, cost: int, now_us: int, window_us: int) -> Standing:
        """The subject's counts before this request, for the generic verdict of a refusal."""
        limits = subject.limits
        requests = tokens = Count()
        if limits.rpm is not None:
            requests = self.requests_count(limit=limits.rpm, now_us=now_us, window_us=window_us)
        if limits.tpm is not None:
            tokens = self.tokens_count(
                limit=limits.tpm, cost=cost, now_us=now_us, window_us=window_us
            )
        return Standing(subject, requests, tokens, Count(used=len(self.leases)))

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
        charged_at = self.charged_at
        reset_ms = ceil_ms(charged_at[0][0] + window_us - now_us) if charged_at else 0
        wait_ms = 0
        if cost <= limit < self.charged + cost:
            freeing_us = self.freeing_us(self.charged + cost - limit, now_us=now_us)
            wait_ms = ceil_ms(freeing_us + window_us - now_us)
        return Count(self.charged, reset_ms, wait_ms)

    def freeing_us(self, need: int, *, now_us: int) -> int:
        """When the charge was made whose leaving frees `need` tokens, oldest first; past
        SCAN_LIMIT charges, the newest one's time (later, never early: admit.lua does the same)."""
        freed = 0
        for index, (at_us, lease) in enumerate(self.charged_at):
            if index == SCAN_LIMIT:
                return self.charged_at[-1][0]
            freed += self.charges.get(lease, 0)
            if freed >= need:
                return at_us
        # Unreachable: `charged` is the sum of the charges and `need` is at most `charged`.
        return now_us  # pragma: no cover


Tallied = tuple[Subject, Tally]
"""A limited subject of the request, with its pruned tally."""


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
        if now_us >= self._sweep_at_us:
            self._sweep(now_us)
        cost = tokens if tokens > 0 else 0  # not max(): a builtin call costs 4 times more
        tallied: list[Tallied] = []
        for subject in subjects:
            if subject.limits.is_limited:
                tallied.append((subject, self._tally(subject, now_us)))
        for subject, tally in tallied:
            if not tally.fits(subject.limits, cost):
                return self._refusal(tallied, cost=cost, now_us=now_us)
        return self._grant(tallied, cost=cost, now_us=now_us)

    def settle(self, subjects: tuple[Subject, ...], grant: Grant, *, tokens: int) -> None:
        """Record `tokens` as used instead of the reservation; end the request's lease."""
        now_us = self._now_us()
        used = tokens if tokens > 0 else 0
        for subject in subjects:
            key = (subject.scope, subject.id)
            tally = self._tallies.get(key)
            if tally is None:
                continue
            tally.settle(lease=grant.lease, tokens=used)
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

    def _tally(self, subject: Subject, now_us: int) -> Tally:
        """The subject's pruned tally, made (and held) if it has none."""
        key = (subject.scope, subject.id)
        tally = self._tallies.get(key)
        if tally is None:
            self._tallies[key] = tally = Tally()
        else:
            tally.prune(now_us=now_us, window_us=self._window_us)
        return tally

    def _grant(self, tallied: list[Tallied], *, cost: int, now_us: int) -> Grant:
        """Record an admitted request for every subject; each quota is the least room left."""
        lease, window_us, expiry_us = new_lease(), self._window_us, now_us + self._ttl_us
        requests: list[Room] = []
        tokens: list[Room] = []
        for subject, tally in tallied:
            limits = subject.limits
            if limits.rpm is not None:
                requests.append(tally.count_request(limits.rpm, now_us=now_us, window_us=window_us))
            if limits.tpm is not None:
                tokens.append(
                    tally.charge(lease, cost, limit=limits.tpm, now_us=now_us, window_us=window_us)
                )
            if limits.parallel is not None:
                tally.leases[lease] = expiry_us
        return Grant(lease, cost, least(requests), least(tokens))

    def _refusal(self, tallied: list[Tallied], *, cost: int, now_us: int) -> Grant | Denial:
        """The generic verdict's Denial, the Redis limiter's too; a subject that counts nothing
        keeps no state."""
        window_us = self._window_us
        standings = tuple(
            tally.standing(subject, cost=cost, now_us=now_us, window_us=window_us)
            for subject, tally in tallied
        )
        refused = denial(standings, tokens=cost, window_ms=self._window_ms)
        if refused is None:  # pragma: no cover - `fits` failed, and the verdict does the same sums
            return self._grant(tallied, cost=cost, now_us=now_us)
        self._forget_idle(subject for subject, _ in tallied)
        return refused

    def _forget_idle(self, subjects: Iterable[Subject]) -> None:
        """Drop the state of the subjects that count nothing."""
        for subject in subjects:
            key = (subject.scope, subject.id)
            tally = self._tallies.get(key)
            if tally is not None and tally.is_empty:
                del self._tallies[key]

    def _sweep(self, now_us: int) -> None:
        """Once a window, drop the state of subjects that count nothing any more, so that
        memory stays bounded by the subjects active in the last window."""
        self._sweep_at_us = now_us + self._window_us
        for key, tally in list(self._tallies.items()):
            tally.prune(now_us=now_us, window_us=self._window_us)
            if tally.is_empty:
                del self._tallies[key]
