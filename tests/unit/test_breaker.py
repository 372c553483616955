"""Breaker (closed / open / half-open) and BreakerBoard, driven by a fake clock."""

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from ai_gateway.config.file import BreakerConfig
from ai_gateway.routing import breaker as breaker_module
from ai_gateway.routing.breaker import Breaker, BreakerBoard, State

KEY = "acme/big-model"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config(**overrides: Any) -> BreakerConfig:
    values: dict[str, Any] = {
        "consecutive_failures": 3,
        "failure_ratio": 0.5,
        "min_requests": 10,
        "window": 20,
        "cooldown_s": 30.0,
        **overrides,
    }
    return BreakerConfig(**values)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **overrides: Any) -> Breaker:
    return Breaker(KEY, config(**overrides), clock)


def fail(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        breaker.failed()


def opened(clock: Clock, **overrides: Any) -> Breaker:
    """A breaker just opened by consecutive failures."""
    breaker = make(clock, **overrides)
    fail(breaker, breaker.config.consecutive_failures)
    assert breaker.current() is State.OPEN
    return breaker


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """The breaker module's log events, whatever logging another test configured."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(0), cache_logger_on_first_use=False
    )
    monkeypatch.setattr(breaker_module, "log", structlog.get_logger(breaker_module.__name__))
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        structlog.configure(**saved)


# --- closed -> open ---------------------------------------------------------------------------


def test_a_new_breaker_is_closed_and_allows(clock: Clock) -> None:
    breaker = make(clock)

    assert breaker.current() is State.CLOSED
    assert breaker.allows()


def test_opens_after_n_consecutive_failures(clock: Clock) -> None:
    breaker = make(clock, consecutive_failures=3)

    fail(breaker, 2)
    assert breaker.current() is State.CLOSED
    breaker.failed()

    assert breaker.current() is State.OPEN
    assert not breaker.allows()


def test_a_success_resets_the_consecutive_count(clock: Clock) -> None:
    breaker = make(clock, consecutive_failures=3)

    fail(breaker, 2)
    breaker.succeeded()
    fail(breaker, 2)

    assert breaker.consecutive == 2
    assert breaker.current() is State.CLOSED


def test_opens_when_the_failure_ratio_is_reached_over_min_requests(clock: Clock) -> None:
    breaker = make(clock, consecutive_failures=100, failure_ratio=0.5, min_requests=10)

    for _ in range(4):
        breaker.succeeded()
        breaker.failed()
    breaker.succeeded()
    assert breaker.current() is State.CLOSED  # 4 failures of 9: below min_requests
    breaker.failed()  # 5 of 10

    assert breaker.current() is State.OPEN


def test_stays_closed_below_min_requests_even_if_all_fail(clock: Clock) -> None:
    breaker = make(clock, consecutive_failures=100, failure_ratio=0.1, min_requests=10)

    fail(breaker, 9)

    assert breaker.current() is State.CLOSED
    assert breaker.ratio == 1.0


def test_stays_closed_below_the_failure_ratio(clock: Clock) -> None:
    breaker = make(clock, consecutive_failures=100, failure_ratio=0.5, min_requests=4)

    for _ in range(6):  # 18 outcomes, within the window of 20
        breaker.succeeded()
        breaker.succeeded()
        breaker.failed()

    assert breaker.current() is State.CLOSED
    assert breaker.ratio == pytest.approx(1 / 3)


def test_the_ratio_only_counts_the_last_window_outcomes(clock: Clock) -> None:
    breaker = make(clock, consecutive_failures=100, failure_ratio=0.5, min_requests=4, window=4)

    fail(breaker, 1)
    for _ in range(4):
        breaker.succeeded()

    assert len(breaker.outcomes) == 4
    assert breaker.ratio == 0.0


# --- open -> half-open ------------------------------------------------------------------------


def test_stays_open_until_the_cooldown_has_passed(clock: Clock) -> None:
    breaker = opened(clock, cooldown_s=30.0)

    clock.advance(29.9)

    assert breaker.current() is State.OPEN
    assert not breaker.allows()


def test_half_opens_after_the_cooldown(clock: Clock) -> None:
    breaker = opened(clock, cooldown_s=30.0)

    clock.advance(30.0)

    assert breaker.current() is State.HALF_OPEN
    assert breaker.allows()


def test_only_one_probe_while_half_open(clock: Clock) -> None:
    breaker = opened(clock)
    clock.advance(30.0)

    breaker.started()

    assert breaker.probing
    assert breaker.current() is State.HALF_OPEN
    assert not breaker.allows()


def test_a_closed_breaker_does_not_mark_attempts_as_probes(clock: Clock) -> None:
    breaker = make(clock)

    breaker.started()
    breaker.started()

    assert not breaker.probing
    assert breaker.allows()


def test_probe_success_closes_and_resets(clock: Clock) -> None:
    breaker = opened(clock)
    clock.advance(30.0)
    probe = breaker.started()
    assert probe

    breaker.succeeded(probe=probe)

    assert breaker.current() is State.CLOSED
    assert breaker.allows()
    assert not breaker.probing
    assert breaker.consecutive == 0
    assert len(breaker.outcomes) == 0


def test_after_closing_it_takes_n_new_failures_to_reopen(clock: Clock) -> None:
    breaker = opened(clock, consecutive_failures=3)
    clock.advance(30.0)
    breaker.started()
    breaker.succeeded()

    fail(breaker, 2)
    assert breaker.current() is State.CLOSED
    breaker.failed()

    assert breaker.current() is State.OPEN


def test_probe_failure_reopens_with_a_new_cooldown(clock: Clock) -> None:
    breaker = opened(clock, cooldown_s=30.0)
    clock.advance(30.0)
    probe = breaker.started()
    assert probe

    breaker.failed(probe=probe)

    assert breaker.current() is State.OPEN
    assert not breaker.probing
    assert breaker.opened_at == clock.now
    clock.advance(29.0)
    assert breaker.current() is State.OPEN
    clock.advance(1.0)
    assert breaker.current() is State.HALF_OPEN


def test_released_frees_the_probe(clock: Clock) -> None:
    breaker = opened(clock)
    clock.advance(30.0)
    probe = breaker.started()
    assert probe

    breaker.released(probe=probe)

    assert not breaker.probing
    assert breaker.current() is State.HALF_OPEN
    assert breaker.allows()


def test_released_does_not_count_as_an_outcome(clock: Clock) -> None:
    breaker = make(clock)
    breaker.started()

    breaker.released()

    assert len(breaker.outcomes) == 0
    assert breaker.consecutive == 0


def test_a_success_while_still_open_closes(clock: Clock) -> None:
    # The all-open rule may still send a request to an open deployment.
    breaker = opened(clock)
    breaker.started()

    breaker.succeeded()

    assert breaker.current() is State.CLOSED


# --- snapshot ---------------------------------------------------------------------------------


def test_snapshot_of_a_new_breaker(clock: Clock) -> None:
    assert make(clock).snapshot() == {
        "deployment": KEY,
        "state": "closed",
        "consecutive_failures": 0,
        "recent_requests": 0,
        "recent_failure_ratio": 0.0,
        "probe_in_flight": False,
        "half_open_in_s": None,
        "seconds_since_last_failure": None,
    }


def test_snapshot_of_an_open_breaker(clock: Clock) -> None:
    breaker = make(clock, consecutive_failures=2, cooldown_s=30.0)
    breaker.succeeded()
    fail(breaker, 2)
    clock.advance(12.25)

    assert breaker.snapshot() == {
        "deployment": KEY,
        "state": "open",
        "consecutive_failures": 2,
        "recent_requests": 3,
        "recent_failure_ratio": 0.667,
        "probe_in_flight": False,
        "half_open_in_s": 17.75,
        "seconds_since_last_failure": 12.25,
    }


def test_snapshot_of_a_half_open_breaker_with_a_probe(clock: Clock) -> None:
    breaker = opened(clock, cooldown_s=30.0)
    clock.advance(31.0)
    breaker.started()

    snapshot = breaker.snapshot()

    assert snapshot["state"] == "half_open"
    assert snapshot["probe_in_flight"] is True
    assert snapshot["half_open_in_s"] is None
    assert snapshot["seconds_since_last_failure"] == 31.0


# --- logs -------------------------------------------------------------------------------------


def test_state_changes_are_logged_with_the_deployment(
    clock: Clock, logs: list[MutableMapping[str, Any]]
) -> None:
    breaker = opened(clock, consecutive_failures=3)
    clock.advance(30.0)
    breaker.current()
    probe = breaker.started()
    assert probe
    breaker.succeeded(probe=probe)

    assert [(e["event"], e["deployment"]) for e in logs] == [
        ("breaker_open", KEY),
        ("breaker_half_open", KEY),
        ("breaker_closed", KEY),
    ]
    assert logs[0]["reason"] == "3 consecutive failures"
    assert logs[1]["reason"] == "cooldown over"
    assert logs[2]["reason"] == "probe succeeded"
    assert all(e["log_level"] == "warning" for e in logs)


def test_a_failed_probe_logs_breaker_open(
    clock: Clock, logs: list[MutableMapping[str, Any]]
) -> None:
    breaker = opened(clock)
    clock.advance(30.0)
    probe = breaker.started()
    assert probe
    breaker.failed(probe=probe)

    assert [e["event"] for e in logs] == ["breaker_open", "breaker_half_open", "breaker_open"]
    assert logs[-1]["reason"] == "probe failed"


def test_the_failure_ratio_reason_is_logged(
    clock: Clock, logs: list[MutableMapping[str, Any]]
) -> None:
    breaker = make(clock, consecutive_failures=100, failure_ratio=0.5, min_requests=4)
    breaker.succeeded()
    breaker.failed()
    breaker.succeeded()
    breaker.failed()

    assert [(e["event"], e["reason"]) for e in logs] == [("breaker_open", "failure ratio 0.50")]


def test_no_log_without_a_state_change(clock: Clock, logs: list[MutableMapping[str, Any]]) -> None:
    breaker = make(clock, consecutive_failures=3)
    fail(breaker, 2)
    breaker.succeeded()
    breaker.current()

    assert logs == []


# --- BreakerBoard -----------------------------------------------------------------------------


def test_the_board_returns_the_same_breaker_for_a_key(clock: Clock) -> None:
    board = BreakerBoard(config(), clock=clock)

    first = board.get("a/m")

    assert board.get("a/m") is first
    assert board.get("b/m") is not first
    assert first.key == "a/m"


def test_board_breakers_share_the_config_and_clock(clock: Clock) -> None:
    board = BreakerBoard(config(consecutive_failures=1, cooldown_s=5.0), clock=clock)
    breaker = board.get("a/m")

    breaker.failed()
    clock.advance(5.0)

    assert breaker.current() is State.HALF_OPEN


def test_pinned_breakers_exist_from_the_start_and_come_first(clock: Clock) -> None:
    board = BreakerBoard(config(), pinned=("p/one", "p/two"), clock=clock)
    board.get("x/m")

    assert [b.key for b in board] == ["p/one", "p/two", "x/m"]


def test_unpinned_breakers_are_evicted_least_recently_used_first(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(breaker_module, "MAX_BREAKERS", 2)
    board = BreakerBoard(config(), clock=clock)
    a = board.get("a/m")
    board.get("b/m")
    assert board.get("a/m") is a  # a is now the most recently used

    board.get("c/m")

    assert [b.key for b in board] == ["a/m", "c/m"]
    assert board.get("a/m") is a


def test_an_evicted_breaker_comes_back_fresh(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breaker_module, "MAX_BREAKERS", 1)
    board = BreakerBoard(config(consecutive_failures=1), clock=clock)
    board.get("a/m").failed()
    board.get("b/m")

    again = board.get("a/m")

    assert again.current() is State.CLOSED
    assert again.consecutive == 0


def test_pinned_breakers_are_never_evicted(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breaker_module, "MAX_BREAKERS", 2)
    board = BreakerBoard(config(consecutive_failures=1), pinned=("p/one",), clock=clock)
    pinned = board.get("p/one")
    pinned.failed()

    for index in range(10):
        board.get(f"x/m{index}")

    assert board.get("p/one") is pinned
    assert pinned.current() is State.OPEN
    assert [b.key for b in board] == ["p/one", "x/m8", "x/m9"]


def test_only_the_probe_frees_the_probe_slot(clock: Clock) -> None:
    breaker = opened(clock)
    clock.advance(30.0)
    probe = breaker.started()
    other = breaker.started()  # an attempt made under the all-open rule

    breaker.released(probe=other)

    assert probe
    assert not other
    assert breaker.probing
    assert not breaker.allows()


def test_an_attempt_on_a_cooling_circuit_is_no_probe_but_its_success_closes_it(
    clock: Clock,
) -> None:
    breaker = opened(clock)

    assert breaker.started() is False
    breaker.succeeded()

    assert breaker.current() is State.CLOSED
