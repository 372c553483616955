"""Mock mode through a running gateway: deterministic, marked, and valid OpenAI output; what
Cerebras refuses is a 400 or 404 in the OpenAI error envelope, never a 500."""

from typing import Any

import httpx
import openai
import pytest

from tests.e2e.server import GatewayServer, openai_client
from tests.fakes import GATEWAY_KEY
from tests.openai_spec import assert_completion, assert_error

HEADERS = {"Authorization": f"Bearer {GATEWAY_KEY}"}
MESSAGES = [{"role": "user", "content": "ping"}]


def test_mock_answers_are_deterministic_and_marked(mock_gateway: GatewayServer) -> None:
    body = {"model": "cerebras/gpt-oss-120b", "messages": [{"role": "user", "content": "ping"}]}

    first = httpx.post(f"{mock_gateway.url}/v1/chat/completions", json=body, headers=HEADERS)
    second = httpx.post(f"{mock_gateway.url}/v1/chat/completions", json=body, headers=HEADERS)

    assert first.json() == second.json()
    assert first.headers["x-ai-gateway-mock"] == "true"
    assert first.json()["system_fingerprint"] == "fp_mock"
    assert first.json()["choices"][0]["message"]["content"] == "[mock] You said: ping"
    assert_completion(first.json())


def test_mock_stream_carries_the_same_text_as_the_completion(mock_gateway: GatewayServer) -> None:
    gateway = openai_client(mock_gateway)
    messages: list[dict[str, str]] = [{"role": "user", "content": "tell me a story"}]

    completion = gateway.chat.completions.create(model="cerebras/llama3.1-8b", messages=messages)  # type: ignore[arg-type]
    stream = gateway.chat.completions.create(
        model="cerebras/llama3.1-8b",
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == completion.choices[0].message.content
    assert chunks[-1].usage == completion.usage
    assert {c.id for c in chunks} == {completion.id}


def test_mock_model_list_is_served_without_a_key_upstream(mock_gateway: GatewayServer) -> None:
    models = [m.id for m in openai_client(mock_gateway).models.list()]

    assert models == ["cerebras/gpt-oss-120b", "cerebras/zai-glm-4.7", "cerebras/llama3.1-8b"]


def post(gateway: GatewayServer, path: str = "/v1/chat/completions", **body: Any) -> httpx.Response:
    """One chat request to the gateway (unified route by default)."""
    payload = {"model": "cerebras/gpt-oss-120b", "messages": MESSAGES, **body}
    return httpx.post(f"{gateway.url}{path}", json=payload, headers=HEADERS)


def error(param: str, message: str, code: str = "invalid_value") -> dict[str, Any]:
    """The OpenAI error envelope for a refusal."""
    body = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return {"error": body}


UNKNOWN_MODEL = error(
    "model",
    "Model llama-3.3-70b does not exist or you do not have access to it. "
    "Mock mode serves gpt-oss-120b, zai-glm-4.7, llama3.1-8b.",
    code="model_not_found",
)


@pytest.mark.parametrize("stream", [False, True])
def test_an_unknown_model_is_a_404_model_not_found(
    mock_gateway: GatewayServer, stream: bool
) -> None:
    unified = post(mock_gateway, model="cerebras/llama-3.3-70b", stream=stream)
    prefixed = post(mock_gateway, "/cerebras/v1/chat/completions", model="llama-3.3-70b")

    assert (unified.status_code, prefixed.status_code) == (404, 404)
    assert unified.json() == prefixed.json() == UNKNOWN_MODEL
    assert_error(unified.json())


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"max_tokens": 0},
            error("max_tokens", "Invalid 'max_tokens': expected an integer of at least 1."),
        ),
        (
            {"max_completion_tokens": -1},
            error(
                "max_completion_tokens",
                "Invalid 'max_completion_tokens': expected an integer of at least 1.",
            ),
        ),
        ({"n": 2}, error("n", "Invalid 'n': expected 1 (one choice per request).")),
        (
            {"tool_choice": {"type": "function", "function": 5}},
            error("tool_choice.function", "Invalid 'tool_choice.function': expected an object."),
        ),
        (
            {"tools": [{"type": "function"}]},
            error("tools[0].function", "Invalid 'tools[0].function': expected an object."),
        ),
        (
            {"response_format": {"type": "json_schema"}},
            error(
                "response_format.json_schema",
                "Invalid 'response_format.json_schema': expected an object.",
            ),
        ),
    ],
)
def test_a_value_cerebras_refuses_is_a_400_before_any_stream_starts(
    mock_gateway: GatewayServer, body: dict[str, Any], expected: dict[str, Any], stream: bool
) -> None:
    response = post(mock_gateway, stream=stream, **body)

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == expected
    assert_error(response.json())


def test_openai_sdk_sees_not_found_and_bad_request(mock_gateway: GatewayServer) -> None:
    gateway = openai_client(mock_gateway)

    with pytest.raises(openai.NotFoundError) as unknown:
        gateway.chat.completions.create(model="cerebras/llama-3.3-70b", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as too_many:
        gateway.chat.completions.create(model="cerebras/gpt-oss-120b", messages=MESSAGES, n=2)  # type: ignore[arg-type]

    assert unknown.value.code == "model_not_found"
    assert (too_many.value.code, too_many.value.param) == ("invalid_value", "n")


ODD_SHAPES: list[dict[str, Any]] = [
    {"tool_choice": {"type": "function", "function": 5}, "tools": []},
    {"tool_choice": {"function": []}},
    {"tool_choice": "required", "tools": [{"type": "function"}]},
    {"tool_choice": "required", "tools": [{"type": "custom"}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"a": [1]}}}]},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": []}}},
    {"response_format": {"type": "json_object"}, "max_tokens": 1},
    {"reasoning_effort": "minimal"},
    {"service_tier": ["auto"]},
    {"unknown_field": {"nested": [None, 1.5]}},
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("body", ODD_SHAPES)
def test_odd_shapes_are_answered_or_refused_never_a_500(
    mock_gateway: GatewayServer, body: dict[str, Any], stream: bool
) -> None:
    response = post(mock_gateway, stream=stream, **body)

    assert response.status_code in (200, 400)
    if response.status_code == 400:
        assert_error(response.json())
