"""Pure mapping: upstream replies -> OpenAI shapes, upstream errors -> GatewayError."""

import time
from typing import Any

import httpx
import pytest

from ai_gateway.errors import (
    GatewayError,
    InvalidRequest,
    ProviderError,
    RateLimited,
    UpstreamAuthError,
    UpstreamTimeout,
)
from ai_gateway.providers.normalizer import (
    ChunkNormalizer,
    created_of,
    error_in_body,
    finish_reason_of,
    to_completion,
    usage_of,
)
from ai_gateway.providers.upstream_errors import (
    MAX_UPSTREAM_MESSAGE,
    from_upstream_status,
    malformed,
    retry_headers,
    too_large,
    upstream_field,
    upstream_message,
    upstream_text,
)
from ai_gateway.redaction import Redactor
from tests.fakes import MODEL, UPSTREAM_KEY, chunk_payloads, completion_payload
from tests.openai_spec import assert_chunk, assert_completion

ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def feed_all(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every OpenAI chunk one normalizer makes of `chunks`, as JSON, each spec-checked."""
    normalizer = ChunkNormalizer("cerebras")
    out = [chunk.data for data in chunks for chunk in normalizer.feed(data)]
    for body in out:
        assert_chunk(body)
    return out


# --------------------------------------------------------------------------- ChunkNormalizer


def test_chunk_ids_stay_the_same_when_upstream_sends_none() -> None:
    chunks = chunk_payloads()
    for chunk in chunks:
        del chunk["id"]

    ids = [body["id"] for body in feed_all(chunks)]

    assert len(ids) == len(chunks) + 1
    assert len(set(ids)) == 1
    assert ids[0].startswith("chatcmpl-")


def test_chunk_ids_keep_the_first_upstream_id_when_later_chunks_lack_it() -> None:
    chunks = chunk_payloads()
    for chunk in chunks[1:]:
        del chunk["id"]

    ids = {body["id"] for body in feed_all(chunks)}

    assert ids == {"chatcmpl-upstream-2"}


def test_two_normalizers_make_different_ids() -> None:
    data = {"created": 1, "model": MODEL, "choices": [{"index": 0, "delta": {"content": "x"}}]}

    first = ChunkNormalizer("cerebras").feed(dict(data))[0].id
    second = ChunkNormalizer("cerebras").feed(dict(data))[0].id

    assert first != second


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("eos", "stop"),
        ("end_turn", "stop"),
        (None, None),
    ],
)
def test_chunk_finish_reason_mapping(upstream: str | None, expected: str | None) -> None:
    data = {
        "id": "c",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {}, "finish_reason": upstream}],
    }

    (body,) = feed_all([data])

    assert body["choices"][0]["finish_reason"] == expected


def test_intermediate_chunk_without_finish_reason_gets_null() -> None:
    data = {"id": "c", "created": 1, "model": MODEL, "choices": [{"index": 0, "delta": {}}]}

    (body,) = feed_all([data])

    assert body == {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}],
    }


def test_usage_on_the_finish_chunk_is_split_into_its_own_chunk() -> None:
    final = chunk_payloads()[-1]

    finish, usage = feed_all([final])

    assert "usage" not in finish
    assert finish["time_info"] == {"total_time": 0.1}
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage == {
        "id": "chatcmpl-upstream-2",
        "object": "chat.completion.chunk",
        "created": 1761231233,
        "model": MODEL,
        "system_fingerprint": "fp_upstream",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def test_usage_only_chunk_gives_one_usage_chunk() -> None:
    data = {"id": "c", "created": 1, "model": MODEL, "choices": [], "usage": {"prompt_tokens": 2}}

    (body,) = feed_all([data])

    assert body["choices"] == []
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 0, "total_tokens": 2}


def test_chunk_tool_calls_null_is_removed() -> None:
    data = {
        "id": "c",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": "x", "tool_calls": None}}],
    }

    (body,) = feed_all([data])

    assert body["choices"][0]["delta"] == {"content": "x"}


def test_chunk_float_created_becomes_int() -> None:
    data = {"id": "c", "created": 17.9, "model": MODEL, "choices": [{"index": 0, "delta": {}}]}

    (body,) = feed_all([data])

    assert body["created"] == 17


def test_error_chunk_raises_the_mapped_error() -> None:
    normalizer = ChunkNormalizer("cerebras")

    with pytest.raises(ProviderError) as info:
        normalizer.feed({"error": {"message": "boom"}, "status_code": 503})

    assert info.value.status_code == 502


def test_chunk_that_does_not_validate_is_malformed() -> None:
    with pytest.raises(ProviderError) as info:
        ChunkNormalizer("cerebras").feed({"id": "c", "choices": [{"delta": {}}]})

    assert "malformed" in info.value.message


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("value", "final", "expected"),
    [
        ("stop", True, "stop"),
        ("function_call", False, "function_call"),
        ("eos", True, "stop"),
        ("eos", False, "stop"),
        ("", True, "stop"),
        (3, False, "stop"),
        (None, True, "stop"),
        (None, False, None),
    ],
)
def test_finish_reason_of(value: object, final: bool, expected: str | None) -> None:
    assert finish_reason_of(value, final=final) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            {"prompt_tokens": 3, "completion_tokens": 4},
            {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        ),
        ({"prompt_tokens": 3}, {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}),
        (
            {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 9},
            {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 9},
        ),
        (None, ZERO_USAGE),
        ([1, 2], ZERO_USAGE),
    ],
)
def test_usage_of_fills_the_counts(value: object, expected: dict[str, int]) -> None:
    assert usage_of(value) == expected


def test_usage_of_keeps_extra_fields() -> None:
    value = {"prompt_tokens": 2, "completion_tokens": 3, "prompt_tokens_details": {"cached": 1}}

    assert usage_of(value) == {**value, "total_tokens": 5}


def test_usage_of_returns_a_fresh_dict() -> None:
    first = usage_of(None)
    first["prompt_tokens"] = 99

    assert usage_of(None) == ZERO_USAGE


@pytest.mark.parametrize(("value", "expected"), [(12, 12), (12.7, 12)])
def test_created_of_numbers(value: float, expected: int) -> None:
    assert created_of({"created": value}) == expected


@pytest.mark.parametrize("value", [None, "17", True])
def test_created_of_anything_else_is_now(value: object) -> None:
    before = int(time.time())

    created = created_of({"created": value})

    assert before <= created <= int(time.time())


def test_error_in_body_ignores_bodies_with_choices() -> None:
    data = completion_payload(error={"message": "partial"})

    assert error_in_body("cerebras", data) is None


def test_error_in_body_uses_the_status_code() -> None:
    error = error_in_body("cerebras", {"error": {"message": "bad"}, "status_code": 400})

    assert isinstance(error, InvalidRequest)
    assert (error.status_code, error.message) == (400, "bad")


def test_to_completion_is_spec_valid_and_keeps_unknown_fields() -> None:
    payload = completion_payload(future_field=[1])

    body = to_completion("cerebras", payload).data

    assert_completion(body)
    assert body["future_field"] == [1]
    assert body["time_info"] == payload["time_info"]


def test_to_completion_does_not_modify_its_input() -> None:
    payload = completion_payload()
    original = completion_payload()

    to_completion("cerebras", payload)

    assert payload == original


# --------------------------------------------------------------------------- from_upstream_status


@pytest.mark.parametrize(
    ("status", "kind", "gateway_status", "code"),
    [
        (400, InvalidRequest, 400, None),
        (404, InvalidRequest, 404, None),
        (409, InvalidRequest, 409, None),
        (413, InvalidRequest, 413, None),
        (422, InvalidRequest, 422, None),
        (408, UpstreamTimeout, 502, "upstream_timeout"),
        (401, UpstreamAuthError, 502, "upstream_auth_error"),
        (402, UpstreamAuthError, 502, "upstream_auth_error"),
        (403, UpstreamAuthError, 502, "upstream_auth_error"),
        (429, RateLimited, 429, "rate_limit_exceeded"),
        (500, ProviderError, 502, "upstream_error"),
        (503, ProviderError, 502, "upstream_error"),
        (418, ProviderError, 502, "upstream_error"),
    ],
)
def test_from_upstream_status_table(
    status: int, kind: type[GatewayError], gateway_status: int, code: str | None
) -> None:
    error = from_upstream_status("cerebras", status, {"message": "upstream said no"})

    assert type(error) is kind
    assert error.status_code == gateway_status
    assert error.code == code


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422, 429])
def test_caller_facing_errors_carry_the_upstream_message(status: int) -> None:
    error = from_upstream_status("cerebras", status, {"error": {"message": "upstream said no"}})

    assert error.message == "upstream said no"


@pytest.mark.parametrize("status", [401, 402, 403, 500, 503, 418])
def test_upstream_side_errors_do_not_echo_the_upstream_body(status: int) -> None:
    error = from_upstream_status("cerebras", status, {"message": f"internal {UPSTREAM_KEY}"})

    assert "internal" not in error.message
    assert UPSTREAM_KEY not in error.message
    assert str(status) in error.message


def test_invalid_request_keeps_param_and_code() -> None:
    body = {"error": {"message": "bad", "param": "temperature", "code": "out_of_range"}}

    error = from_upstream_status("cerebras", 400, body)

    assert error.envelope() == {
        "error": {
            "message": "bad",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "out_of_range",
        }
    }


def test_invalid_request_without_a_message_says_who_rejected_it() -> None:
    error = from_upstream_status("cerebras", 400, None)

    assert error.message == "cerebras rejected the request (HTTP 400)"
    assert (error.param, error.code) == (None, None)


def test_rate_limit_copies_only_the_retry_headers() -> None:
    headers = httpx.Headers(
        {"Retry-After": "2", "retry-after-ms": "2000", "x-ratelimit-remaining": "0"}
    )

    error = from_upstream_status("cerebras", 429, {"message": "slow"}, headers=headers)

    assert error.headers == {"retry-after": "2", "retry-after-ms": "2000"}


def test_rate_limit_without_a_message_has_a_default_one() -> None:
    error = from_upstream_status("cerebras", 429, "")

    assert error.message == "cerebras rate limit exceeded"
    assert error.headers == {}


@pytest.mark.parametrize("status", [400, 429])
def test_upstream_messages_are_scrubbed(status: int) -> None:
    body = {"message": f"bad key {UPSTREAM_KEY}!"}

    error = from_upstream_status("cerebras", status, body, redactor=Redactor([UPSTREAM_KEY]))

    assert error.message == "bad key [redacted]!"


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_errors_keep_only_the_retry_headers(status: int) -> None:
    headers = httpx.Headers({"Retry-After": "2", "x-ratelimit-remaining": "0"})

    error = from_upstream_status("cerebras", status, {}, headers=headers)

    assert error.headers == {"retry-after": "2"}


def test_rate_limit_keeps_the_upstream_code() -> None:
    body = {"error": {"message": "slow", "code": "token_quota_exceeded"}}

    error = from_upstream_status("cerebras", 429, body)

    assert error.code == "token_quota_exceeded"


def test_retry_headers_keep_the_exact_names() -> None:
    assert retry_headers({"retry-after": "1", "other": "x"}) == {"retry-after": "1"}


def test_malformed_is_a_502() -> None:
    error = malformed("cerebras", "no choices")

    assert (error.status_code, error.code) == (502, "upstream_error")
    assert error.message == "cerebras returned a malformed response: no choices"


# --------------------------------------------------------------------------- Redactor

CONFIGURED_KEY = "plainvendorkey0123456789"  # no known shape: only the configured list catches it


def test_redactor_removes_configured_keys() -> None:
    redactor = Redactor(["abc123xyz9", CONFIGURED_KEY])

    text = redactor.redact(f"token=abc123xyz9 ok, and {CONFIGURED_KEY}.")

    assert text == "token=[redacted] ok, and [redacted]."


def test_redactor_removes_the_longer_of_two_overlapping_keys_whole() -> None:
    redactor = Redactor(["abcdefgh", "abcdefgh-and-more"])

    assert redactor.redact("x abcdefgh-and-more y") == "x [redacted] y"


@pytest.mark.parametrize("placeholder", ["", "none", "ollama"])
def test_redactor_ignores_empty_and_placeholder_keys(placeholder: str) -> None:
    text = "none of the ollama models match"

    assert Redactor([placeholder]).redact(text) == text


def test_redactor_including_adds_keys_and_keeps_itself_when_nothing_is_new() -> None:
    redactor = Redactor([CONFIGURED_KEY])

    assert redactor.including(CONFIGURED_KEY, "") is redactor
    assert redactor.including("another-plain-key").redact("another-plain-key") == "[redacted]"


def test_redactor_repr_shows_no_key() -> None:
    assert CONFIGURED_KEY not in repr(Redactor([CONFIGURED_KEY]))


@pytest.mark.parametrize(
    "shaped",
    [
        "csk-abcdefgh12345678",
        "sk-proj-abcdefgh1234",
        "sk-ant-api03-abcdefgh1234",
        "sk-or-v1-0123456789abcdef",
        "sk-0123456789abcdef",
        "gsk_abcdefgh12345678",
        "GSK_ABCDEFGH12345678",
        "xai-abcdefgh12345678",
        "fw_abcdefgh12345678",
        "AIzaSyA1234567890abcdefghijklmnopqrstu",
        "Bearer sk-abcdefghij",
        "Bearer plainbearertoken1",
        "api_key-0123456789",
        "api-key_0123456789",
        "key-abcdefghijkl",
    ],
)
def test_redactor_removes_anything_shaped_like_a_key(shaped: str) -> None:
    assert Redactor().redact(f"got {shaped} here") == "got [redacted] here"


@pytest.mark.parametrize(
    "text",
    [
        "monkey-business-plan",
        "the key is wrong",
        "sk-short",
        "Field required",
        "model xai-grok-2-latest does not exist",
        "the bearer of bad news",
        "Missing bearer authentication header",
    ],
)
def test_redactor_leaves_ordinary_text(text: str) -> None:
    assert Redactor().redact(text) == text


def test_upstream_text_is_cut_after_redacting() -> None:
    key_at_the_cut = "x" * (MAX_UPSTREAM_MESSAGE - 10) + " " + UPSTREAM_KEY

    text = upstream_text(key_at_the_cut, Redactor())

    assert text == ("x" * (MAX_UPSTREAM_MESSAGE - 10) + " [redacted]")[:MAX_UPSTREAM_MESSAGE]
    assert upstream_text("y" * (MAX_UPSTREAM_MESSAGE + 50), Redactor()) == (
        "y" * MAX_UPSTREAM_MESSAGE
    )
    assert upstream_text(None, Redactor()) is None


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422, 429])
@pytest.mark.parametrize("field", ["message", "code", "param"])
def test_every_upstream_string_of_an_error_is_redacted(status: int, field: str) -> None:
    body = {"error": {"message": "no", "code": "c", "param": "p", field: f"k={CONFIGURED_KEY}"}}

    error = from_upstream_status("groq", status, body, redactor=Redactor([CONFIGURED_KEY]))

    assert CONFIGURED_KEY not in str(error.envelope())
    # A rate limit names no parameter.
    expected = None if (status, field) == (429, "param") else "k=[redacted]"
    assert error.envelope()["error"][field] == expected


def test_upstream_code_and_param_are_cut_to_a_bounded_length() -> None:
    body = {"error": {"message": "m", "code": "c" * 5000, "param": "p" * 5000}}

    error = from_upstream_status("groq", 400, body)

    assert (len(error.code or ""), len(error.param or "")) == (MAX_UPSTREAM_MESSAGE,) * 2


def test_error_in_body_redacts_key_shapes_without_a_redactor() -> None:
    body = {"error": {"message": "Invalid API key: sk-up0123456789"}, "status_code": 400}

    error = error_in_body("cerebras", body)

    assert error is not None
    assert error.message == "Invalid API key: [redacted]"


def test_error_in_body_redacts_configured_keys_with_the_redactor() -> None:
    body = {
        "error": {"message": f"bad {CONFIGURED_KEY}", "code": CONFIGURED_KEY},
        "status_code": 400,
    }

    error = error_in_body("groq", body, Redactor([CONFIGURED_KEY]))

    assert error is not None
    assert (error.message, error.code) == ("bad [redacted]", "[redacted]")


def test_error_in_body_ignores_a_null_error() -> None:
    assert error_in_body("cerebras", {"error": None, "choices": []}) is None


def test_too_large_is_a_502_with_its_own_code() -> None:
    error = too_large("groq", 1024, what="stream event")

    assert (error.status_code, error.code) == (502, "upstream_response_too_large")
    assert error.message == "groq sent a stream event larger than 1024 bytes"


# --------------------------------------------------------------------------- upstream_message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"message": "flat", "type": "t", "param": None, "code": None}, "flat"),
        ({"error": {"message": "wrapped", "type": "t"}}, "wrapped"),
        ({"error": "just a string"}, "just a string"),
        ({"detail": "Not Found"}, "Not Found"),
        (
            {"detail": [{"loc": ["body"], "msg": "Field required"}, {"msg": "Bad type"}]},
            "Field required; Bad type",
        ),
        (
            {"detail": [{"loc": ["body"], "type": "missing"}]},
            "{'loc': ['body'], 'type': 'missing'}",
        ),
        ({"detail": ["plain item", {"msg": "dict item"}]}, "plain item; dict item"),
        ("  <html>bad gateway</html>\n", "<html>bad gateway</html>"),
        ("   ", None),
        ({}, None),
        ({"error": {}}, None),
        ({"message": ""}, None),
        (None, None),
        (42, None),
    ],
    ids=[
        "flat",
        "wrapped",
        "error-string",
        "detail-string",
        "fastapi-detail-list",
        "detail-without-msg",
        "detail-plain-strings",
        "plain-text",
        "blank-text",
        "empty-object",
        "empty-error",
        "empty-message",
        "none",
        "number",
    ],
)
def test_upstream_message_shapes(body: object, expected: str | None) -> None:
    assert upstream_message(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"param": "model"}, "model"),
        ({"error": {"param": "model"}}, "model"),
        ({"error": {"param": ""}}, None),
        ({"error": {"code": 400}}, None),
        ("text", None),
    ],
)
def test_upstream_field_param(body: object, expected: str | None) -> None:
    assert upstream_field(body, "param") == expected


def test_upstream_field_stringifies_codes() -> None:
    assert upstream_field({"error": {"code": 400}}, "code") == "400"


@pytest.mark.parametrize(
    "change",
    [
        {"choices": ["not an object"]},
        {"choices": [{"index": 0, "delta": {"content": 5}}]},
        {"choices": [{"index": 0, "delta": {"role": ["assistant"]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": {"id": "x"}}}]},
        {"choices": [{"index": "0", "delta": {}}]},
        {"model": None},
        {"usage": {"prompt_tokens": "many", "completion_tokens": 1}},
    ],
    ids=["choice", "content", "role", "tool-calls", "index", "model", "usage"],
)
def test_chunks_of_the_wrong_shape_are_malformed_not_crashes(change: dict[str, Any]) -> None:
    data = {"id": "c", "created": 1, "model": "m", "choices": [], **change}

    with pytest.raises(ProviderError) as info:
        ChunkNormalizer("cerebras").feed(data)

    assert info.value.status_code == 502
    assert "malformed" in info.value.message


def test_a_completion_with_numeric_string_usage_is_served_with_integers() -> None:
    payload = completion_payload(usage={"prompt_tokens": "3", "completion_tokens": 1})

    body = to_completion("cerebras", payload).data

    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert_completion(body)


@pytest.mark.parametrize(
    "change",
    [
        {"choices": [{"index": 0, "message": {"role": "user", "content": "x"}}]},
        {"choices": [{"index": 0, "message": {"content": 3}}]},
        {"choices": [{"index": 0, "message": {"content": "x", "tool_calls": "f()"}}]},
        {"choices": [{"index": 0, "message": {"content": "x"}, "logprobs": "none"}]},
        {"system_fingerprint": 7},
        {"usage": {"prompt_tokens": "many", "completion_tokens": 1}},
    ],
    ids=["role", "content", "tool-calls", "logprobs", "fingerprint", "usage"],
)
def test_completions_of_the_wrong_shape_are_malformed(change: dict[str, Any]) -> None:
    with pytest.raises(ProviderError) as info:
        to_completion("cerebras", completion_payload(**change))

    assert info.value.status_code == 502
    assert "malformed" in info.value.message
