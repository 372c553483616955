"""What a failed attempt means: retry, fall back or stop; which error the caller sees."""

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from ai_gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    ParameterRejected,
    ProviderError,
    ProviderNotConfigured,
    RateLimited,
    RequestTooLarge,
    UpstreamAuthError,
    UpstreamRedirected,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
)
from ai_gateway.routing.outcome import (
    Outcome,
    classify,
    is_context_length,
    marks_unhealthy,
    most_informative,
    retry_after_s,
)

CONTEXT_MESSAGES = [
    "This model's maximum context length is 8192 tokens.",
    "Please reduce the length of the messages: context_length exceeded",
    "input exceeds the context window of this model",
    "Too many tokens in the request",
    "prompt is too long: 300000 tokens > 200000 maximum",
]


def outcome(error: GatewayError, *, context: bool = False) -> Outcome:
    return classify(error, fallback_on_context_length=context)


# --- classify: retry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        RateLimited("slow down"),
        RateLimited("slow down", headers={"retry-after": "2"}),
        UpstreamTimeout("upstream timed out", status=504),
        ProviderError("upstream answered 500", status=502),
        ProviderError("upstream answered 503", status=503),
        ProviderError("connection refused"),
        ProviderError("malformed JSON from upstream"),
    ],
)
def test_rate_limits_and_upstream_failures_are_retried(error: GatewayError) -> None:
    assert outcome(error) is Outcome.RETRY
    assert outcome(error, context=True) is Outcome.RETRY


# --- classify: fall back ----------------------------------------------------------------------


def test_an_upstream_auth_error_falls_back() -> None:
    error = UpstreamAuthError("upstream rejected the key", status=502)

    assert outcome(error) is Outcome.FALL_BACK


def test_an_oversized_reply_falls_back_instead_of_fetching_it_again() -> None:
    error = UpstreamResponseTooLarge("cerebras sent a reply over 16777216 bytes")

    assert outcome(error) is Outcome.FALL_BACK


def test_a_redirect_falls_back_instead_of_being_retried() -> None:
    assert outcome(UpstreamRedirected("cerebras returned HTTP 307")) is Outcome.FALL_BACK


def test_an_unconfigured_provider_falls_back() -> None:
    assert outcome(ProviderNotConfigured("no key for acme")) is Outcome.FALL_BACK


def test_a_rejected_parameter_falls_back() -> None:
    error = ParameterRejected("Parameter 'seed' is not supported by 'a/m'.", param="seed")

    assert outcome(error) is Outcome.FALL_BACK


def test_context_length_code_falls_back_when_enabled() -> None:
    error = InvalidRequest("too big", code="context_length_exceeded")

    assert outcome(error, context=True) is Outcome.FALL_BACK


@pytest.mark.parametrize("message", CONTEXT_MESSAGES)
def test_context_length_messages_fall_back_when_enabled(message: str) -> None:
    assert outcome(InvalidRequest(message), context=True) is Outcome.FALL_BACK


@pytest.mark.parametrize("message", CONTEXT_MESSAGES)
def test_context_length_stops_when_not_enabled(message: str) -> None:
    assert outcome(InvalidRequest(message)) is Outcome.STOP
    assert outcome(InvalidRequest("x", code="context_length_exceeded")) is Outcome.STOP


# --- classify: stop ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequest("'messages' is required"),
        InvalidRequest("unprocessable", status=422),
        RequestTooLarge("too large"),
        AuthenticationFailed("bad gateway key"),
        InternalError("bug"),
    ],
)
def test_the_callers_own_errors_stop(error: GatewayError) -> None:
    assert outcome(error) is Outcome.STOP
    assert outcome(error, context=True) is Outcome.STOP


# --- is_context_length ------------------------------------------------------------------------


def test_is_context_length_by_code() -> None:
    assert is_context_length(InvalidRequest("anything", code="context_length_exceeded"))


@pytest.mark.parametrize("message", CONTEXT_MESSAGES)
def test_is_context_length_by_message(message: str) -> None:
    assert is_context_length(InvalidRequest(message))


def test_is_context_length_ignores_case() -> None:
    assert is_context_length(InvalidRequest("MAXIMUM CONTEXT LENGTH EXCEEDED"))


def test_other_invalid_requests_are_not_context_length() -> None:
    assert not is_context_length(InvalidRequest("temperature must be at most 2"))


def test_only_invalid_requests_are_context_length() -> None:
    assert not is_context_length(ProviderError("maximum context length is 8192 tokens"))
    assert not is_context_length(RateLimited("too many tokens per minute"))


# --- marks_unhealthy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ProviderError("down"),
        UpstreamAuthError("key rejected"),
        ProviderNotConfigured("no key"),
    ],
)
def test_upstream_failures_mark_the_deployment_unhealthy(error: GatewayError) -> None:
    assert marks_unhealthy(error)


@pytest.mark.parametrize(
    "error",
    [
        RateLimited("slow down"),
        ParameterRejected("no seed", param="seed"),
        InvalidRequest("maximum context length"),
        AuthenticationFailed("bad key"),
    ],
)
def test_request_specific_failures_do_not_mark_it_unhealthy(error: GatewayError) -> None:
    assert not marks_unhealthy(error)


# --- most_informative -------------------------------------------------------------------------


def test_an_invalid_request_beats_everything() -> None:
    invalid = InvalidRequest("too long")
    errors: list[GatewayError] = [
        ProviderError("down"),
        invalid,
        RateLimited("slow"),
        ProviderNotConfigured("no key"),
    ]

    assert most_informative(errors) is invalid


def test_a_rate_limit_beats_upstream_failures() -> None:
    limited = RateLimited("slow")
    errors: list[GatewayError] = [ProviderNotConfigured("x"), limited, ProviderError("down")]

    assert most_informative(errors) is limited


def test_an_upstream_failure_beats_an_unconfigured_provider() -> None:
    failure = ProviderError("down")

    assert most_informative([failure, ProviderNotConfigured("x")]) is failure


def test_a_rejected_parameter_counts_as_an_invalid_request() -> None:
    rejected = ParameterRejected("no seed", param="seed")

    assert most_informative([rejected, RateLimited("slow")]) is rejected


def test_the_latest_among_equals_is_returned() -> None:
    first, second, third = ProviderError("1"), ProviderError("2"), ProviderError("3")

    assert most_informative([first, second, third]) is third


def test_the_latest_invalid_request_is_returned() -> None:
    early, late = InvalidRequest("early"), InvalidRequest("late")
    errors: list[GatewayError] = [early, RateLimited("x"), late, ProviderError("y")]

    assert most_informative(errors) is late


def test_a_single_error_is_returned() -> None:
    only = ProviderNotConfigured("x")

    assert most_informative([only]) is only


# --- retry_after_s ----------------------------------------------------------------------------


def limited(**headers: str) -> RateLimited:
    return RateLimited("slow down", headers={k.replace("_", "-"): v for k, v in headers.items()})


def test_no_retry_hint_is_none() -> None:
    assert retry_after_s(RateLimited("slow down")) is None
    assert retry_after_s(ProviderError("down", headers={"x-request-id": "1"})) is None


def test_retry_after_ms_is_converted_to_seconds() -> None:
    assert retry_after_s(limited(retry_after_ms="1500")) == 1.5


def test_retry_after_ms_accepts_fractions() -> None:
    assert retry_after_s(limited(retry_after_ms="12.5")) == pytest.approx(0.0125)


def test_negative_retry_after_ms_is_zero() -> None:
    assert retry_after_s(limited(retry_after_ms="-200")) == 0.0


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after_s(limited(retry_after_ms="250", retry_after="9")) == 0.25


@pytest.mark.parametrize(("value", "seconds"), [("3", 3.0), ("0", 0.0), ("2.5", 2.5), (" 7 ", 7.0)])
def test_retry_after_in_seconds(value: str, seconds: float) -> None:
    assert retry_after_s(limited(retry_after=value)) == seconds


def test_header_names_are_case_insensitive() -> None:
    assert retry_after_s(RateLimited("x", headers={"Retry-After": "4"})) == 4.0
    assert retry_after_s(RateLimited("x", headers={"RETRY-AFTER-MS": "100"})) == 0.1


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    when = format_datetime(datetime(2025, 1, 2, 3, 4, 35, tzinfo=UTC), usegmt=True)

    assert when == "Thu, 02 Jan 2025 03:04:35 GMT"
    assert retry_after_s(limited(retry_after=when), now=now) == 30.0


def test_retry_after_as_a_past_http_date_is_zero() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()

    assert retry_after_s(limited(retry_after="Thu, 02 Jan 2025 03:00:00 GMT"), now=now) == 0.0


def test_retry_after_http_date_defaults_to_the_wall_clock() -> None:
    seconds = retry_after_s(limited(retry_after="Thu, 01 Jan 2099 00:00:00 GMT"))

    assert seconds is not None
    assert seconds > 365 * 24 * 3600


@pytest.mark.parametrize("value", ["soon", "", "-5", "1e3", "12s", "Mon, 99 Foo 2025"])
def test_garbage_retry_after_is_none(value: str) -> None:
    assert retry_after_s(limited(retry_after=value)) is None


@pytest.mark.parametrize("value", ["soon", "", "1,5"])
def test_garbage_retry_after_ms_is_none(value: str) -> None:
    assert retry_after_s(limited(retry_after_ms=value)) is None


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_retry_after_ms_is_none(value: str) -> None:
    assert retry_after_s(limited(retry_after_ms=value)) is None


def test_an_absurdly_long_retry_after_is_none() -> None:
    assert retry_after_s(limited(retry_after="9" * 400)) is None


@pytest.mark.parametrize(
    "error", [InvalidRequest("no such thing", status=404), ModelNotFound("no such model")]
)
def test_an_upstream_404_falls_back_and_marks_the_deployment(error: GatewayError) -> None:
    assert classify(error, fallback_on_context_length=False) is Outcome.FALL_BACK
    assert marks_unhealthy(error)
