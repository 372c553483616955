"""Attempts: which deployment next and when, given outcomes, breakers, backoff and a deadline."""

import random
from collections import Counter
from typing import Any

import pytest

from ai_gateway.config.file import BreakerConfig
from ai_gateway.errors import (
    GatewayError,
    InvalidRequest,
    ParameterRejected,
    ProviderError,
    ProviderNotConfigured,
    RateLimited,
    UpstreamAuthError,
)
from ai_gateway.routing.attempts import MIN_ATTEMPT_S, Attempts, weighted_order
from ai_gateway.routing.breaker import BreakerBoard, State
from ai_gateway.routing.outcome import Outcome
from ai_gateway.routing.route import Deployment, Policy, Route
from tests.fakes import FakeProvider

START = 1000.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def deployment(provider: str, model: str = "m", weight: float = 1.0) -> Deployment:
    return Deployment(FakeProvider(name=provider), model, weight=weight)


A, B, C = deployment("a"), deployment("b"), deployment("c")


class Plan:
    """An Attempts over a route, with its own fake clock and breaker board."""

    def __init__(
        self,
        *deployments: Deployment,
        breaker: BreakerConfig | None = None,
        rng: random.Random | None = None,
        **policy: Any,
    ) -> None:
        self.clock = Clock()
        self.board = BreakerBoard(breaker or BreakerConfig(), clock=self.clock)
        route = Route("fast", deployments or (A, B, C), Policy(**policy))
        self.attempts = Attempts(route, self.board, clock=self.clock, rng=rng)

    def next_key(self, busy: tuple[str, ...] = ()) -> str | None:
        step = self.attempts.next(busy)
        return None if step is None else step[0].key

    def fail(self, d: Deployment, error: GatewayError | None = None) -> Outcome:
        self.attempts.started(d)
        return self.attempts.failed(d, error or ProviderError("upstream answered 503"))

    def open_breaker(self, d: Deployment) -> None:
        breaker = self.board.get(d.key)
        for _ in range(breaker.config.consecutive_failures):
            breaker.failed()
        assert breaker.current() is State.OPEN


def retry_after(seconds: str) -> RateLimited:
    return RateLimited("slow down", headers={"retry-after": seconds})


# --- order and first tries --------------------------------------------------------------------


def test_first_tries_follow_route_order() -> None:
    plan = Plan(A, B, C, retries=0)

    assert plan.attempts.next() == (A, START)
    plan.fail(A)
    assert plan.attempts.next() == (B, START)
    plan.fail(B)
    assert plan.attempts.next() == (C, START)
    plan.fail(C)
    assert plan.attempts.next() is None


def test_a_new_plan_has_no_tries_and_the_deadline_from_the_policy() -> None:
    plan = Plan(A, B, deadline_s=12.0)

    assert plan.attempts.count == 0
    assert plan.attempts.deadline == START + 12.0
    assert plan.attempts.remaining_s() == 12.0
    plan.clock.advance(20.0)
    assert plan.attempts.remaining_s() == 0.0


def test_started_counts_attempts() -> None:
    plan = Plan(A, B, retries=1)

    plan.fail(A)
    plan.fail(B)
    plan.fail(A)

    assert plan.attempts.count == 3
    assert plan.attempts.tries == {"a/m": 2, "b/m": 1}


def test_a_retryable_failure_moves_to_the_next_deployment_at_once() -> None:
    plan = Plan(A, B, retries=2, backoff_initial_s=1.0)

    assert plan.fail(A) is Outcome.RETRY

    assert plan.attempts.next() == (B, START)


def test_a_retryable_failure_schedules_a_jittered_backoff() -> None:
    for _ in range(50):
        plan = Plan(A, retries=2, backoff_initial_s=2.0, backoff_max_s=60.0)

        plan.fail(A)
        step = plan.attempts.next()

        assert step is not None
        assert step[0] is A
        assert START + 1.0 <= step[1] <= START + 2.0


def test_the_backoff_doubles_with_each_try() -> None:
    plan = Plan(A, retries=3, backoff_initial_s=1.0, backoff_max_s=60.0)
    plan.fail(A)

    plan.fail(A)  # second try: base 2s

    assert START + 1.0 <= plan.attempts.ready_at["a/m"] <= START + 2.0


def test_the_backoff_is_capped_by_backoff_max() -> None:
    plan = Plan(A, retries=5, backoff_initial_s=1.0, backoff_max_s=1.5)
    for _ in range(4):
        plan.fail(A)  # fourth try: base 8s, capped at 1.5s

    assert START + 0.75 <= plan.attempts.ready_at["a/m"] <= START + 1.5


def test_retries_are_bounded_by_the_policy() -> None:
    plan = Plan(A, retries=2, backoff_initial_s=0.01)

    for _ in range(3):
        assert plan.next_key() == "a/m"
        plan.fail(A)

    assert plan.attempts.next() is None
    assert plan.attempts.count == 3


def test_no_retries_means_one_try_per_deployment() -> None:
    plan = Plan(A, B, retries=0)
    plan.fail(A)
    plan.fail(B)

    assert plan.attempts.next() is None


def test_each_deployment_gets_its_first_try_before_any_retry() -> None:
    plan = Plan(A, B, C, retries=2, backoff_initial_s=0.0)
    plan.fail(A)  # no backoff: A is ready again at once

    assert plan.next_key() == "b/m"
    plan.fail(B)
    assert plan.next_key() == "c/m"


def test_among_retries_the_earliest_ready_comes_first() -> None:
    plan = Plan(A, B, retries=1)
    plan.fail(A, retry_after("5"))
    plan.fail(B, retry_after("2"))

    assert plan.attempts.next() == (B, START + 2.0)


# --- Retry-After ------------------------------------------------------------------------------


def test_retry_after_is_the_ready_time() -> None:
    plan = Plan(A, retries=1, backoff_initial_s=0.01)

    plan.fail(A, retry_after("5"))

    assert plan.attempts.next() == (A, START + 5.0)


def test_retry_after_ms_is_the_ready_time() -> None:
    plan = Plan(A, retries=1)

    plan.fail(A, RateLimited("slow", headers={"retry-after-ms": "1500"}))

    assert plan.attempts.next() == (A, START + 1.5)


def test_a_ready_time_in_the_past_starts_now() -> None:
    plan = Plan(A, retries=1)
    plan.fail(A, retry_after("2"))

    plan.clock.advance(3.0)

    assert plan.attempts.next() == (A, START + 3.0)


def test_retry_after_at_the_cap_is_waited_for() -> None:
    plan = Plan(A, retries=1, retry_after_max_s=10.0)

    plan.fail(A, retry_after("10"))

    assert plan.attempts.next() == (A, START + 10.0)


def test_retry_after_above_the_cap_excludes_the_deployment() -> None:
    plan = Plan(A, B, retries=3, retry_after_max_s=10.0)

    assert plan.fail(A, retry_after("11")) is Outcome.RETRY

    assert "a/m" in plan.attempts.excluded
    plan.fail(B)
    assert plan.next_key() == "b/m"
    plan.fail(B)
    plan.fail(B)
    plan.fail(B)
    assert plan.attempts.next() is None


def test_a_zero_retry_after_falls_back_to_the_backoff() -> None:
    plan = Plan(A, retries=1, backoff_initial_s=2.0, backoff_max_s=60.0)

    plan.fail(A, retry_after("0"))

    assert START + 1.0 <= plan.attempts.ready_at["a/m"] <= START + 2.0


# --- fall back, stop, deadline ----------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ProviderNotConfigured("no key"),
        UpstreamAuthError("key rejected"),
        ParameterRejected("no seed", param="seed"),
    ],
)
def test_a_fall_back_outcome_excludes_the_deployment(error: GatewayError) -> None:
    plan = Plan(A, B, retries=3)

    assert plan.fail(A, error) is Outcome.FALL_BACK

    assert plan.attempts.excluded == {"a/m"}
    plan.fail(B)
    assert plan.next_key() == "b/m"


def test_context_length_falls_back_only_where_the_policy_allows() -> None:
    too_long = InvalidRequest("maximum context length is 8192 tokens")

    assert Plan(A, B).fail(A, too_long) is Outcome.STOP
    assert Plan(A, B, fallback_on_context_length=True).fail(A, too_long) is Outcome.FALL_BACK


def test_a_stop_outcome_leaves_the_schedule_alone() -> None:
    plan = Plan(A, B, retries=1)

    assert plan.fail(A, InvalidRequest("bad temperature")) is Outcome.STOP

    assert plan.attempts.excluded == set()
    assert plan.attempts.ready_at["a/m"] == 0.0


def test_a_deployment_ready_after_the_deadline_is_not_offered() -> None:
    plan = Plan(A, retries=3, deadline_s=3.0, retry_after_max_s=30.0)

    plan.fail(A, retry_after("5"))

    assert "a/m" not in plan.attempts.excluded
    assert plan.attempts.next() is None


def test_a_deployment_ready_before_the_deadline_is_offered() -> None:
    plan = Plan(A, retries=3, deadline_s=6.0)

    plan.fail(A, retry_after("5"))

    assert plan.attempts.next() == (A, START + 5.0)


def test_nothing_more_is_offered_once_the_deadline_has_passed() -> None:
    plan = Plan(A, B, deadline_s=5.0)
    plan.fail(A)

    plan.clock.advance(5.0)

    assert plan.attempts.next() is None


def test_no_retry_starts_in_the_last_moment_before_the_deadline() -> None:
    plan = Plan(A, B, deadline_s=5.0)
    plan.fail(A)

    plan.clock.advance(5.0 - MIN_ATTEMPT_S / 2)

    assert plan.attempts.next() is None


def test_the_first_attempt_always_starts() -> None:
    plan = Plan(A, deadline_s=5.0)

    plan.clock.advance(6.0)

    assert plan.next_key() == "a/m"


def test_an_untried_deployment_is_offered_just_before_the_deadline() -> None:
    plan = Plan(A, deadline_s=5.0)

    plan.clock.advance(4.9)

    assert plan.attempts.next() == (A, START + 4.9)


# --- busy -------------------------------------------------------------------------------------


def test_busy_deployments_are_skipped() -> None:
    plan = Plan(A, B, C)

    assert plan.next_key(busy=("a/m",)) == "b/m"
    assert plan.next_key(busy=("a/m", "b/m")) == "c/m"
    assert plan.next_key(busy=("a/m", "b/m", "c/m")) is None


def test_busy_skipping_does_not_use_up_a_try() -> None:
    plan = Plan(A, B, retries=0)

    plan.attempts.next(busy=("a/m",))

    assert plan.next_key() == "a/m"


# --- breakers ---------------------------------------------------------------------------------


def test_an_open_deployment_comes_after_the_closed_ones() -> None:
    plan = Plan(A, B, C)
    plan.open_breaker(A)

    assert plan.next_key() == "b/m"
    plan.fail(B)
    assert plan.next_key() == "c/m"
    plan.fail(C)
    assert plan.next_key() == "a/m"  # never skipped only because it is open


def test_when_all_are_open_the_least_recently_failed_comes_first() -> None:
    plan = Plan(A, B, C)
    plan.open_breaker(B)
    plan.clock.advance(1.0)
    plan.open_breaker(C)
    plan.clock.advance(1.0)
    plan.open_breaker(A)

    assert plan.next_key() == "b/m"
    plan.fail(B)
    assert plan.next_key() == "c/m"


def test_a_half_open_deployment_free_for_a_probe_keeps_its_place() -> None:
    plan = Plan(A, B, breaker=BreakerConfig(consecutive_failures=1, cooldown_s=5.0))
    plan.open_breaker(A)
    plan.clock.advance(5.0)

    assert plan.board.get("a/m").current() is State.HALF_OPEN
    assert plan.next_key() == "a/m"


def test_starting_a_half_open_deployment_makes_it_the_probe() -> None:
    plan = Plan(A, B, breaker=BreakerConfig(consecutive_failures=1, cooldown_s=5.0))
    plan.open_breaker(A)
    plan.clock.advance(5.0)

    plan.attempts.started(A)

    assert plan.board.get("a/m").probing
    assert not plan.board.get("a/m").allows()


def test_a_probing_deployment_comes_after_free_ones_in_another_request() -> None:
    plan = Plan(A, B, breaker=BreakerConfig(consecutive_failures=1, cooldown_s=5.0))
    plan.open_breaker(A)
    plan.clock.advance(5.0)
    plan.board.get("a/m").started()  # another request's probe is in flight

    assert plan.next_key() == "b/m"


# --- weighted ---------------------------------------------------------------------------------


def test_weighted_first_choices_follow_the_weights() -> None:
    rng = random.Random(1234)
    heavy, light = deployment("heavy", weight=3.0), deployment("light", weight=1.0)
    firsts = Counter(Plan(heavy, light, weighted=True, rng=rng).next_key() for _ in range(4000))

    assert firsts["heavy/m"] / 4000 == pytest.approx(0.75, abs=0.04)
    assert firsts["light/m"] / 4000 == pytest.approx(0.25, abs=0.04)


def test_weighted_distribution_over_three_deployments() -> None:
    rng = random.Random(99)
    ds = (deployment("x", weight=6.0), deployment("y", weight=3.0), deployment("z", weight=1.0))
    firsts = Counter(Plan(*ds, weighted=True, rng=rng).next_key() for _ in range(5000))

    assert firsts["x/m"] / 5000 == pytest.approx(0.6, abs=0.04)
    assert firsts["y/m"] / 5000 == pytest.approx(0.3, abs=0.04)
    assert firsts["z/m"] / 5000 == pytest.approx(0.1, abs=0.03)


def test_a_weighted_plan_tries_every_deployment_once() -> None:
    plan = Plan(A, B, C, weighted=True, retries=0, rng=random.Random(7))
    seen = []

    while (key := plan.next_key()) is not None:
        seen.append(key)
        plan.fail(next(d for d in (A, B, C) if d.key == key))

    assert sorted(seen) == ["a/m", "b/m", "c/m"]


def test_weighted_order_is_a_permutation() -> None:
    order = weighted_order((A, B, C), random.Random(3))

    assert sorted(d.key for d in order) == ["a/m", "b/m", "c/m"]


def test_weighted_order_is_reproducible_with_a_seed() -> None:
    ds = (A, B, C)

    assert weighted_order(ds, random.Random(5)) == weighted_order(ds, random.Random(5))


def test_ordered_strategy_ignores_weights() -> None:
    light, heavy = deployment("light", weight=1.0), deployment("heavy", weight=100.0)

    for seed in range(20):
        assert Plan(light, heavy, rng=random.Random(seed)).next_key() == "light/m"


# --- final_error ------------------------------------------------------------------------------


def test_final_error_is_the_most_informative() -> None:
    plan = Plan(A, B, C, retries=0)
    limited = RateLimited("slow down")
    plan.fail(A, limited)
    plan.fail(B, ProviderError("down"))
    plan.fail(C, ProviderNotConfigured("no key"))

    assert plan.attempts.final_error() is limited


def test_final_error_prefers_an_invalid_request() -> None:
    plan = Plan(A, B, retries=0, fallback_on_context_length=True)
    too_long = InvalidRequest("maximum context length exceeded")
    plan.fail(A, too_long)
    plan.fail(B, RateLimited("slow down"))

    assert plan.attempts.final_error() is too_long


def test_final_error_without_any_attempt_is_a_provider_error() -> None:
    plan = Plan(A, B)

    error = plan.attempts.final_error()

    assert isinstance(error, ProviderError)
    assert error.status_code == 502
    assert "'fast'" in error.message


def test_failed_attempts_are_all_recorded() -> None:
    plan = Plan(A, B, retries=0)
    first, second = ProviderError("1"), ProviderError("2")
    plan.fail(A, first)
    plan.fail(B, second)

    assert plan.attempts.errors == [first, second]
    assert plan.attempts.final_error() is second


def test_a_long_retry_after_does_not_hold_back_a_retry_that_is_ready_sooner() -> None:
    plan = Plan(A, B, retries=2, backoff_initial_s=0.1, backoff_max_s=0.1)
    plan.fail(A, retry_after("20"))
    plan.fail(B)

    step = plan.attempts.next()

    assert step is not None
    assert step[0] is B
    assert step[1] <= START + 0.1


def test_an_open_deployment_waits_while_a_closed_one_may_still_be_retried() -> None:
    plan = Plan(A, B, retries=1)
    plan.open_breaker(B)
    plan.fail(A)

    assert plan.next_key() == "a/m"  # A's retry, not B during its cooldown
    plan.fail(A)
    assert plan.next_key() == "b/m"  # nothing else left: the open one is still tried


def test_a_half_open_deployment_gives_one_request_its_probe() -> None:
    plan = Plan(A, B, breaker=BreakerConfig(consecutive_failures=1, cooldown_s=5))
    plan.open_breaker(A)
    plan.clock.advance(5)

    assert plan.next_key() == "a/m"
    assert plan.attempts.started(A) is True
    assert plan.next_key(busy=("a/m",)) == "b/m"
