"""The Limiter contract, run against both limiters: in memory, and on the machine's real Redis
(a key prefix of its own per test). Windows are a few hundred ms so that expiry is real time."""

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from typing import Protocol

import pytest
import redis.asyncio

from ai_gateway.keys.caller import Limits, Scope, Subject
from ai_gateway.limits.limiter import WINDOW_MS, Denial, Dimension, Grant, Quota
from ai_gateway.limits.memory import MemoryLimiter
from ai_gateway.limits.redis_store import RedisLimiter, redis_client
from tests.services import REDIS_URL, redis_prefix

pytestmark = pytest.mark.anyio

SHORT_MS = 400


class Make(Protocol):
    def __call__(
        self, *, window_ms: int = WINDOW_MS, lease_ttl_ms: int = 60_000
    ) -> MemoryLimiter | RedisLimiter: ...


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Builds limiters of one kind; each is closed (and its Redis keys deleted) afterwards."""
    made: list[MemoryLimiter | RedisLimiter] = []
    clients: list[redis.asyncio.Redis] = []
    with redis_prefix() as prefix:

        def build(
            *, window_ms: int = WINDOW_MS, lease_ttl_ms: int = 60_000
        ) -> MemoryLimiter | RedisLimiter:
            limiter: MemoryLimiter | RedisLimiter
            if request.param == "memory":
                limiter = MemoryLimiter(window_ms=window_ms, lease_ttl_ms=lease_ttl_ms)
            else:
                clients.append(redis_client(REDIS_URL, timeout_s=2.0))
                limiter = RedisLimiter(
                    clients[-1],
                    prefix=prefix,
                    fail_open=False,
                    window_ms=window_ms,
                    lease_ttl_ms=lease_ttl_ms,
                )
            made.append(limiter)
            return limiter

        yield build
        for limiter in made:
            await limiter.aclose()
        for client in clients:
            await client.aclose()


def subject(scope: Scope = Scope.KEY, **limits: int) -> Subject:
    """A subject of its own with the given limits."""
    return Subject(scope, f"id-{secrets.token_hex(4)}", Limits(**limits))


def granted(verdict: Grant | Denial) -> Grant:
    assert isinstance(verdict, Grant), verdict
    return verdict


def denied(verdict: Grant | Denial) -> Denial:
    assert isinstance(verdict, Denial), verdict
    return verdict


async def sleep_ms(ms: int) -> None:
    await asyncio.sleep(ms / 1000)


async def test_requests_are_exact_under_concurrent_admissions(make: Make) -> None:
    limiter = make()
    key = subject(rpm=50)

    verdicts = await asyncio.gather(*(limiter.admit((key,), tokens=1) for _ in range(200)))

    grants = [verdict for verdict in verdicts if isinstance(verdict, Grant)]
    denials = [verdict for verdict in verdicts if isinstance(verdict, Denial)]
    assert len(grants) == 50
    assert len(denials) == 150
    assert {denial.dimension for denial in denials} == {Dimension.REQUESTS}
    assert sorted(grant.requests.remaining for grant in grants if grant.requests) == list(range(50))


async def test_tokens_are_exact_under_concurrent_admissions(make: Make) -> None:
    limiter = make()
    key, team = subject(tpm=1_000), subject(Scope.TEAM, tpm=600)

    verdicts = await asyncio.gather(*(limiter.admit((key, team), tokens=7) for _ in range(200)))

    assert sum(isinstance(verdict, Grant) for verdict in verdicts) == 600 // 7


async def test_a_refused_subject_leaves_every_other_uncounted(make: Make) -> None:
    limiter = make()
    key, team = subject(rpm=2, tpm=100), subject(Scope.TEAM, rpm=1)

    first = granted(await limiter.admit((key, team), tokens=10))
    refusal = denied(await limiter.admit((key, team), tokens=10))
    alone = granted(await limiter.admit((key,), tokens=10))

    assert first.requests == Quota(limit=1, remaining=0, reset_ms=WINDOW_MS)
    assert (refusal.dimension, refusal.subject) == (Dimension.REQUESTS, team)
    # The key counted the first request only: the refused one took neither a request nor tokens.
    assert alone.requests is not None
    assert (alone.requests.limit, alone.requests.remaining) == (2, 0)
    assert alone.tokens is not None
    assert alone.tokens.remaining == 80
    assert denied(await limiter.admit((key,), tokens=10)).subject == key


async def test_tokens_reserve_the_estimate(make: Make) -> None:
    limiter = make()
    key = subject(tpm=100)

    first = granted(await limiter.admit((key,), tokens=60))
    refusal = denied(await limiter.admit((key,), tokens=50))
    last = granted(await limiter.admit((key,), tokens=40))

    assert first.reserved_tokens == 60
    assert first.tokens == Quota(limit=100, remaining=40, reset_ms=WINDOW_MS)
    assert refusal.dimension is Dimension.TOKENS
    assert not refusal.is_too_large
    assert refusal.tokens is not None
    assert (refusal.tokens.limit, refusal.tokens.remaining) == (100, 40)
    assert 0 < refusal.retry_after_ms <= WINDOW_MS
    assert last.tokens is not None
    assert last.tokens.remaining == 0


async def test_a_request_over_the_token_limit_is_too_large_and_uncounted(make: Make) -> None:
    limiter = make()
    key = subject(rpm=10, tpm=100)

    refusal = denied(await limiter.admit((key,), tokens=101))

    assert refusal.dimension is Dimension.TOKENS
    assert refusal.is_too_large
    assert refusal.retry_after_ms == 0
    assert refusal.requests == Quota(limit=10, remaining=10, reset_ms=0)
    assert refusal.tokens == Quota(limit=100, remaining=100, reset_ms=0)
    whole = granted(await limiter.admit((key,), tokens=100))
    assert whole.tokens is not None
    assert whole.tokens.remaining == 0


async def test_too_large_outranks_a_longer_wait(make: Make) -> None:
    limiter = make()
    key, team = subject(rpm=1), subject(Scope.TEAM, tpm=10)
    granted(await limiter.admit((key,), tokens=1))

    refusal = denied(await limiter.admit((key, team), tokens=11))

    assert (refusal.dimension, refusal.subject, refusal.is_too_large) == (
        Dimension.TOKENS,
        team,
        True,
    )


async def test_a_zero_limit_refuses_every_request_as_too_large(make: Make) -> None:
    limiter = make()

    for limits in ({"rpm": 0}, {"parallel": 0}):
        refusal = denied(await limiter.admit((subject(**limits),), tokens=0))
        assert refusal.is_too_large
        assert refusal.retry_after_ms == 0


async def test_settling_lower_frees_tokens(make: Make) -> None:
    limiter = make()
    key = subject(tpm=100)
    grant = granted(await limiter.admit((key,), tokens=60))

    limiter.settle((key,), grant, tokens=10)
    await limiter.flush()

    rest = granted(await limiter.admit((key,), tokens=90))
    assert rest.tokens is not None
    assert rest.tokens.remaining == 0


async def test_settling_higher_counts_the_tokens_used(make: Make) -> None:
    limiter = make()
    key = subject(tpm=100)
    grant = granted(await limiter.admit((key,), tokens=10))

    limiter.settle((key,), grant, tokens=80)
    await limiter.flush()

    assert denied(await limiter.admit((key,), tokens=21)).dimension is Dimension.TOKENS
    granted(await limiter.admit((key,), tokens=20))


async def test_settling_after_the_window_changes_nothing(make: Make) -> None:
    limiter = make(window_ms=SHORT_MS)
    key = subject(tpm=100)
    grant = granted(await limiter.admit((key,), tokens=50))
    await sleep_ms(SHORT_MS + 50)

    limiter.settle((key,), grant, tokens=1_000)
    await limiter.flush()

    whole = granted(await limiter.admit((key,), tokens=100))
    assert whole.tokens == Quota(limit=100, remaining=0, reset_ms=SHORT_MS)


async def test_settling_twice_is_harmless(make: Make) -> None:
    limiter = make()
    key = subject(tpm=100, parallel=2)
    first = granted(await limiter.admit((key,), tokens=50))
    granted(await limiter.admit((key,), tokens=10))

    limiter.settle((key,), first, tokens=20)
    limiter.settle((key,), first, tokens=20)
    await limiter.flush()

    third = granted(await limiter.admit((key,), tokens=70))
    assert third.tokens is not None
    assert third.tokens.remaining == 0
    # The second settle of the same lease did not end the other request's lease.
    assert denied(await limiter.admit((key,), tokens=0)).dimension is Dimension.PARALLEL


async def test_a_negative_settle_counts_as_nothing(make: Make) -> None:
    limiter = make()
    key = subject(tpm=100)
    grant = granted(await limiter.admit((key,), tokens=50))

    limiter.settle((key,), grant, tokens=-30)
    await limiter.flush()

    assert denied(await limiter.admit((key,), tokens=101)).is_too_large
    granted(await limiter.admit((key,), tokens=100))


async def test_parallel_requests_hold_leases_until_settled(make: Make) -> None:
    limiter = make()
    key = subject(parallel=2)
    first = granted(await limiter.admit((key,), tokens=5))
    granted(await limiter.admit((key,), tokens=5))

    refusal = denied(await limiter.admit((key,), tokens=5))
    limiter.settle((key,), first, tokens=5)
    await limiter.flush()

    assert (refusal.dimension, refusal.subject, refusal.retry_after_ms) == (
        Dimension.PARALLEL,
        key,
        1_000,
    )
    granted(await limiter.admit((key,), tokens=5))


async def test_a_settled_lease_is_free_within_milliseconds(make: Make) -> None:
    limiter = make()
    key = subject(parallel=1)
    grant = granted(await limiter.admit((key,), tokens=5))

    limiter.settle((key,), grant, tokens=5)
    await sleep_ms(50)

    granted(await limiter.admit((key,), tokens=5))


async def test_a_lease_never_settled_expires_after_its_ttl(make: Make) -> None:
    limiter = make(lease_ttl_ms=300)
    key = subject(parallel=1)
    granted(await limiter.admit((key,), tokens=5))
    denied(await limiter.admit((key,), tokens=5))

    await sleep_ms(350)

    granted(await limiter.admit((key,), tokens=5))


async def test_the_request_retry_after_is_enough(make: Make) -> None:
    limiter = make(window_ms=SHORT_MS)
    key = subject(rpm=2)
    granted(await limiter.admit((key,), tokens=1))
    await sleep_ms(100)
    granted(await limiter.admit((key,), tokens=1))

    refusal = denied(await limiter.admit((key,), tokens=1))
    assert refusal.requests is not None
    assert refusal.requests.reset_ms == refusal.retry_after_ms
    assert SHORT_MS - 300 < refusal.retry_after_ms <= SHORT_MS - 100
    await sleep_ms(refusal.retry_after_ms)

    granted(await limiter.admit((key,), tokens=1))


async def test_the_token_retry_after_waits_for_just_enough_room(make: Make) -> None:
    limiter = make(window_ms=SHORT_MS)
    key = subject(tpm=100)
    granted(await limiter.admit((key,), tokens=40))
    await sleep_ms(100)
    granted(await limiter.admit((key,), tokens=30))
    await sleep_ms(100)
    granted(await limiter.admit((key,), tokens=20))

    # 90 counted: 60 must leave for 70 to fit, so the first two charges.
    refusal = denied(await limiter.admit((key,), tokens=70))
    assert SHORT_MS - 300 < refusal.retry_after_ms <= SHORT_MS - 100
    await sleep_ms(refusal.retry_after_ms)

    grant = granted(await limiter.admit((key,), tokens=70))
    assert grant.tokens is not None
    assert grant.tokens.remaining == 10


async def test_a_token_refusal_reads_a_bounded_part_of_the_window(make: Make) -> None:
    limiter = make()
    key = subject(tpm=3_000)
    await asyncio.gather(*(limiter.admit((key,), tokens=1) for _ in range(1_500)))
    newest = granted(await limiter.admit((key,), tokens=1))

    # 1,501 counted: 1,401 of the oldest charges must leave for 1,900 more to fit, past the
    # 1,024 a refusal reads: the answer is when the newest leaves (later, never early).
    refusal = denied(await limiter.admit((key,), tokens=1_900))

    assert newest.tokens is not None
    assert WINDOW_MS - 2_000 < refusal.retry_after_ms <= WINDOW_MS
    assert refusal.retry_after_ms >= newest.tokens.reset_ms - 2_000


async def test_requests_leave_the_window(make: Make) -> None:
    limiter = make(window_ms=SHORT_MS)
    key = subject(rpm=1, tpm=10)
    granted(await limiter.admit((key,), tokens=10))
    denied(await limiter.admit((key,), tokens=10))

    await sleep_ms(SHORT_MS + 20)

    grant = granted(await limiter.admit((key,), tokens=10))
    assert grant.requests == Quota(limit=1, remaining=0, reset_ms=SHORT_MS)
    assert grant.tokens == Quota(limit=10, remaining=0, reset_ms=SHORT_MS)


async def test_quotas_name_the_subject_with_the_least_room(make: Make) -> None:
    limiter = make()
    key = subject(rpm=10, tpm=1_000)
    team = subject(Scope.TEAM, rpm=3, tpm=5_000, parallel=5)

    first = granted(await limiter.admit((key, team), tokens=100))
    second = granted(await limiter.admit((key, team), tokens=100))

    assert first.requests == Quota(limit=3, remaining=2, reset_ms=WINDOW_MS)
    assert first.tokens == Quota(limit=1_000, remaining=900, reset_ms=WINDOW_MS)
    assert second.requests is not None
    assert (second.requests.limit, second.requests.remaining) == (3, 1)
    assert WINDOW_MS - 1_000 < second.requests.reset_ms <= WINDOW_MS
    assert second.tokens is not None
    assert (second.tokens.limit, second.tokens.remaining) == (1_000, 800)


async def test_a_denial_reports_the_standing_before_the_request(make: Make) -> None:
    limiter = make()
    key = subject(rpm=5, tpm=100)
    granted(await limiter.admit((key,), tokens=70))

    refusal = denied(await limiter.admit((key,), tokens=40))

    assert refusal.requests is not None
    assert (refusal.requests.limit, refusal.requests.remaining) == (5, 4)
    assert refusal.tokens is not None
    assert (refusal.tokens.limit, refusal.tokens.remaining) == (100, 30)
    assert 0 < refusal.tokens.reset_ms <= WINDOW_MS


async def test_a_denial_of_a_key_and_its_team_reports_the_least_room_of_both(make: Make) -> None:
    limiter = make()
    key = subject(rpm=5, tpm=1_000)
    team = subject(Scope.TEAM, rpm=2, tpm=300, parallel=10)
    for _ in range(2):
        granted(await limiter.admit((key, team), tokens=100))

    refusal = denied(await limiter.admit((key, team), tokens=100))

    assert (refusal.dimension, refusal.subject, refusal.is_too_large) == (
        Dimension.REQUESTS,
        team,
        False,
    )
    assert 0 < refusal.retry_after_ms <= WINDOW_MS
    assert refusal.requests is not None
    assert (refusal.requests.limit, refusal.requests.remaining) == (2, 0)
    assert refusal.requests.reset_ms == refusal.retry_after_ms
    assert refusal.tokens is not None
    assert (refusal.tokens.limit, refusal.tokens.remaining) == (300, 100)


async def test_dimensions_no_subject_limits_have_no_quota(make: Make) -> None:
    limiter = make()

    only_parallel = granted(await limiter.admit((subject(parallel=3),), tokens=5))
    only_requests = granted(await limiter.admit((subject(rpm=3),), tokens=5))
    only_tokens = granted(await limiter.admit((subject(tpm=30),), tokens=5))

    assert (only_parallel.requests, only_parallel.tokens) == (None, None)
    assert only_requests.tokens is None
    assert only_tokens.requests is None


async def test_unset_limits_are_not_counted(make: Make) -> None:
    limiter = make()
    key = subject(rpm=100)
    team = subject(Scope.TEAM, tpm=10)

    for _ in range(3):
        granted(await limiter.admit((key, team), tokens=3))

    # The key counted no tokens and the team no requests.
    key_only = granted(await limiter.admit((key,), tokens=1_000))
    assert key_only.requests is not None
    assert key_only.requests.remaining == 96
    assert denied(await limiter.admit((team,), tokens=2)).subject == team


async def test_subjects_without_limits_are_always_granted(make: Make) -> None:
    limiter = make()
    free = Subject(Scope.KEY, "free", Limits())

    for subjects in ((), (free,)):
        grant = granted(await limiter.admit(subjects, tokens=10**9))
        assert (grant.requests, grant.tokens, grant.is_counted) == (None, None, True)
        limiter.settle(subjects, grant, tokens=5)
    await limiter.flush()


async def test_every_grant_has_a_new_random_lease(make: Make) -> None:
    limiter = make()
    key = subject(rpm=100)

    leases = {granted(await limiter.admit((key,), tokens=1)).lease for _ in range(20)}

    assert len(leases) == 20
    assert all(re.fullmatch(r"[0-9a-f]{32}", lease) for lease in leases)
