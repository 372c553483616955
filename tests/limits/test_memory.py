"""MemoryLimiter beyond the contract, on a clock the test moves: exact waits and resets, and
memory that holds only the subjects still counting something."""

import pytest

from ai_gateway.keys.caller import Limits, Scope, Subject
from ai_gateway.limits.limiter import LEASE_TTL_MS, WINDOW_MS, Denial, Dimension, Grant, Quota
from ai_gateway.limits.memory import MemoryLimiter

pytestmark = pytest.mark.anyio


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def key(name: str = "k", **limits: int) -> Subject:
    return Subject(Scope.KEY, name, Limits(**limits))


async def test_request_waits_and_resets_are_exact() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    subject = key(rpm=2)
    await limiter.admit((subject,), tokens=1)
    clock.advance(10)
    await limiter.admit((subject,), tokens=1)
    clock.advance(10)

    refusal = await limiter.admit((subject,), tokens=1)

    assert refusal == Denial(
        dimension=Dimension.REQUESTS,
        subject=subject,
        retry_after_ms=40_000,
        requests=Quota(limit=2, remaining=0, reset_ms=40_000),
        tokens=None,
    )


async def test_token_waits_and_resets_are_exact() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    subject = key(tpm=100)
    await limiter.admit((subject,), tokens=70)
    clock.advance(10)
    await limiter.admit((subject,), tokens=20)
    clock.advance(10.5)

    refusal = await limiter.admit((subject,), tokens=40)
    grant = await limiter.admit((subject,), tokens=10)

    assert refusal == Denial(
        dimension=Dimension.TOKENS,
        subject=subject,
        retry_after_ms=39_500,
        requests=None,
        tokens=Quota(limit=100, remaining=10, reset_ms=39_500),
    )
    assert isinstance(grant, Grant)
    assert grant.tokens == Quota(limit=100, remaining=0, reset_ms=39_500)


async def test_the_longest_wait_names_the_denial() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    subject = key(rpm=1, tpm=100)
    await limiter.admit((subject,), tokens=90)
    clock.advance(30)
    team = Subject(Scope.TEAM, "t", Limits(tpm=50))
    await limiter.admit((team,), tokens=50)

    refusal = await limiter.admit((subject, team), tokens=20)

    assert isinstance(refusal, Denial)
    assert (refusal.dimension, refusal.subject, refusal.retry_after_ms) == (
        Dimension.TOKENS,
        team,
        WINDOW_MS,
    )


async def test_a_lease_expires_after_the_default_ttl() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    subject = key(parallel=1)
    await limiter.admit((subject,), tokens=1)

    clock.advance(LEASE_TTL_MS / 1000 - 1)
    refused = await limiter.admit((subject,), tokens=1)
    clock.advance(1)
    admitted = await limiter.admit((subject,), tokens=1)

    assert isinstance(refused, Denial)
    assert isinstance(admitted, Grant)


async def test_a_subject_is_forgotten_once_it_counts_nothing() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    leased, windowed = key("leased", parallel=1), key("windowed", rpm=5, tpm=50)
    grant = await limiter.admit((leased, windowed), tokens=5)
    assert isinstance(grant, Grant)
    assert limiter.subject_count == 2

    limiter.settle((leased, windowed), grant, tokens=5)
    assert limiter.subject_count == 1
    clock.advance(WINDOW_MS / 1000)
    limiter.settle((windowed,), grant, tokens=5)

    assert limiter.subject_count == 0


async def test_memory_holds_only_the_subjects_of_the_last_window() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    for index in range(1_000):
        await limiter.admit((key(f"k{index}", rpm=1),), tokens=1)
    assert limiter.subject_count == 1_000

    clock.advance(WINDOW_MS / 1000 + 1)
    await limiter.admit((key("latest", rpm=1),), tokens=1)

    assert limiter.subject_count == 1


async def test_a_refused_subject_gets_no_state() -> None:
    limiter = MemoryLimiter(clock=Clock())

    refusal = await limiter.admit((key(tpm=10),), tokens=11)
    limiter.settle((key("other", tpm=10),), Grant("lease", 1, None, None), tokens=1)

    assert isinstance(refusal, Denial)
    assert limiter.subject_count == 0


async def test_closing_forgets_every_count() -> None:
    limiter = MemoryLimiter(clock=Clock())
    subject = key(rpm=1)
    await limiter.admit((subject,), tokens=1)

    await limiter.aclose()

    assert isinstance(await limiter.admit((subject,), tokens=1), Grant)


async def test_a_settle_after_the_window_changes_nothing_before_the_next_prune() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    subject = key(tpm=100)
    late = await limiter.admit((subject,), tokens=50)
    clock.advance(30)
    await limiter.admit((subject,), tokens=10)
    clock.advance(WINDOW_MS / 1000 - 30)
    assert isinstance(late, Grant)

    # The first charge has left the window; nothing has pruned it yet.
    limiter.settle((subject,), late, tokens=1_000)
    grant = await limiter.admit((subject,), tokens=90)

    assert isinstance(grant, Grant)
    assert grant.tokens == Quota(limit=100, remaining=0, reset_ms=30_000)


async def test_a_refusal_leaves_no_state_for_a_new_subject_beside_a_counted_one() -> None:
    limiter = MemoryLimiter(clock=Clock())
    counted, team = key(rpm=5), Subject(Scope.TEAM, "t", Limits(tpm=10))
    await limiter.admit((counted,), tokens=1)

    refusal = await limiter.admit((counted, team), tokens=11)

    assert isinstance(refusal, Denial)
    assert (refusal.subject, refusal.is_too_large) == (team, True)
    assert limiter.subject_count == 1


async def test_a_grant_reports_the_least_room_of_every_subject() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    first, second = key("a", rpm=5, tpm=100), key("b", rpm=6, tpm=100)
    await limiter.admit((second,), tokens=30)
    clock.advance(1)

    grant = await limiter.admit((first, second), tokens=20)

    # Equal room for requests: the first subject's quota; less room for tokens: the second's.
    assert isinstance(grant, Grant)
    assert grant.requests == Quota(limit=5, remaining=4, reset_ms=WINDOW_MS)
    assert grant.tokens == Quota(limit=100, remaining=50, reset_ms=WINDOW_MS - 1_000)
