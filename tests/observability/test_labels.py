"""The pieces under the metrics, without an app: bounded label values, error types, attempt
kinds, breaker state changes, dead workers' gauges and the workers' shared directory."""

import asyncio
import os

import pytest

from ai_gateway.api.record import RequestRecord
from ai_gateway.config.file import BreakerConfig
from ai_gateway.errors import InvalidRequest, UpstreamTimeout
from ai_gateway.observability.exposition import SHARED_DIRECTORY_VARIABLE
from ai_gateway.observability.labels import ErrorTypes, NameBound, gateway_error_codes
from ai_gateway.observability.workers import shared_metrics_directory
from ai_gateway.routing.attempts import AttemptKind, Attempts
from ai_gateway.routing.breaker import BreakerBoard, State
from ai_gateway.routing.route import Deployment, Route
from tests.fakes import FakeProvider

A = Deployment(FakeProvider(name="a"), "m")
B = Deployment(FakeProvider(name="b"), "m")
ERRORS = ErrorTypes(gateway_error_codes())


def record(status: int | None, code: str | None = None) -> RequestRecord:
    made = RequestRecord("req_1", "POST", "/v1/chat/completions")
    made.status, made.error_code = status, code
    return made


def test_known_names_pass_and_others_are_learnt_only_on_success_up_to_the_limit() -> None:
    bound = NameBound({"smart"}, limit=2)

    assert bound.value("smart") == "smart"
    assert bound.value(None) == "none"
    assert bound.value("a/typo") == "other"
    assert bound.value("a/one", learn=True) == "a/one"
    assert bound.value("a/one") == "a/one"
    assert bound.value("a/two", learn=True) == "a/two"
    assert bound.value("a/three", learn=True) == "other"


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (200, None, ""),
        (None, None, "interrupted"),
        (502, "upstream_error", "upstream_error"),
        (429, "rpm_limit_exceeded", "rpm_limit_exceeded"),
        (200, "client_send_timeout", "client_send_timeout"),
        (400, "some_vendor_code_with_any_text", "400"),
        (404, None, "404"),
    ],
)
def test_error_types_are_gateway_codes_else_the_status(
    status: int | None, code: str | None, expected: str
) -> None:
    assert ERRORS.of_record(record(status, code)) == expected


def test_a_caller_who_left_is_client_closed() -> None:
    left = record(None)
    left.is_client_closed = True

    assert ERRORS.of_record(left) == "client_closed"


def test_attempt_error_types() -> None:
    assert ERRORS.of_error(UpstreamTimeout("slow")) == "upstream_timeout"
    assert ERRORS.of_error(InvalidRequest("no", code="vendor says no", status=422)) == "422"
    assert ERRORS.of_error(asyncio.CancelledError()) == "cancelled"
    assert ERRORS.of_error(RuntimeError("bug")) == "_OTHER"


def test_attempt_kinds_follow_the_deployments_tried() -> None:
    plan = Attempts(Route("smart", (A, B)), BreakerBoard(BreakerConfig()))
    kinds = []
    for deployment, is_hedge in ((A, False), (A, False), (B, False), (A, True)):
        plan.started(deployment)
        kinds.append(plan.kind(is_hedge=is_hedge))

    assert kinds == [AttemptKind.FIRST, AttemptKind.RETRY, AttemptKind.FALLBACK, AttemptKind.HEDGE]
    assert plan.watch(A) is None  # nothing watches: nothing is made


def test_a_board_tells_its_watcher_of_current_states_then_of_changes() -> None:
    now = [0.0]
    board = BreakerBoard(
        BreakerConfig(consecutive_failures=1, cooldown_s=5), pinned=("a/m",), clock=lambda: now[0]
    )
    seen: list[tuple[str, State]] = []
    board.watch(lambda key, state: seen.append((key, state)))

    board.get("b/m").failed()
    now[0] = 6.0
    board.get("b/m").current()

    assert seen == [("a/m", State.CLOSED), ("b/m", State.OPEN), ("b/m", State.HALF_OPEN)]


def test_several_workers_get_a_fresh_directory_removed_afterwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SHARED_DIRECTORY_VARIABLE, "/set/by/hand")
    with shared_metrics_directory(1) as none:
        assert none is None
        assert SHARED_DIRECTORY_VARIABLE not in os.environ  # one process: its own metrics
    assert os.environ[SHARED_DIRECTORY_VARIABLE] == "/set/by/hand"
    monkeypatch.delenv(SHARED_DIRECTORY_VARIABLE)
    with shared_metrics_directory(2) as directory:
        assert directory is not None
        assert os.environ[SHARED_DIRECTORY_VARIABLE] == str(directory)
        assert list(directory.iterdir()) == []
        (directory / "metrics-1.json").write_bytes(b"{}")

    assert not directory.exists()
    assert SHARED_DIRECTORY_VARIABLE not in os.environ
