"""Outage: skip the store for a backoff once it failed, one probe at a time, logged once."""

from ai_gateway.limits.outage import Outage
from tests.limits.conftest import Logs


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_healthy_store_is_never_skipped(logs: Logs) -> None:
    outage = Outage(backoff_s=1.0, clock=Clock())

    outage.succeeded()

    assert not outage.should_skip()
    assert outage.wait_s() == 0.0
    assert logs == []


def test_after_a_failure_one_probe_per_backoff(logs: Logs) -> None:
    clock = Clock()
    outage = Outage(backoff_s=1.0, clock=clock)

    outage.failed(ConnectionRefusedError("refused"))
    during = [outage.should_skip() for _ in range(3)]
    clock.now += 0.25
    wait_s = outage.wait_s()
    clock.now += 0.75
    probe, behind_probe = outage.should_skip(), outage.should_skip()

    assert during == [True, True, True]
    assert wait_s == 0.75
    assert (probe, behind_probe) == (False, True)


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(logs: Logs) -> None:
    clock = Clock()
    outage = Outage(backoff_s=1.0, clock=clock)

    outage.failed(ConnectionRefusedError("refused"))
    clock.now += 1.5
    outage.failed(TimeoutError("timed out"))
    clock.now += 1.0
    outage.succeeded()
    outage.succeeded()

    assert logs == [
        {
            "event": "limits_store_unreachable",
            "log_level": "warning",
            "error": "ConnectionRefusedError",
            "detail": "refused",
            "backoff_s": 1.0,
        },
        {"event": "limits_store_recovered", "log_level": "info", "outage_s": 2.5},
    ]
    assert not outage.should_skip()
