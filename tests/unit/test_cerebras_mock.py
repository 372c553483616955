"""MockCerebrasClient: deterministic answers, streams that match them, spec-valid after mapping."""

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai.types.chat import ChatCompletion as OpenAIChatCompletion
from openai.types.chat import ChatCompletionChunk as OpenAIChatCompletionChunk

from ai_gateway.errors import GatewayError, InvalidRequest
from ai_gateway.providers.cerebras import CerebrasProvider
from ai_gateway.providers.cerebras_client import CerebrasAPI, CerebrasClient
from ai_gateway.providers.cerebras_mock import (
    MOCK_CREATED,
    MOCK_FINGERPRINT,
    MockAnswer,
    MockCerebrasClient,
    answer_text,
    message_text,
    requested_tool,
)
from ai_gateway.providers.cerebras_refusals import refusal, upstream_answer
from ai_gateway.providers.normalizer import ChunkNormalizer, to_completion
from ai_gateway.providers.wire import OpenAIWire, WireClient
from ai_gateway.routing.outcome import Outcome, classify
from ai_gateway.schemas import ModelCard, ModelList
from tests.fake_upstream import FakeUpstream, json_reply
from tests.fakes import MODEL, UPSTREAM_KEY, chat_request
from tests.openai_spec import assert_chunk, assert_completion, assert_error, assert_model_list

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there"},
]
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time"}},
]


async def chat(messages: list[dict[str, Any]] = MESSAGES, **params: Any) -> dict[str, Any]:
    """One non-streamed mock answer."""
    return await MockCerebrasClient().chat(MODEL, messages, **params)


async def chunks(messages: list[dict[str, Any]] = MESSAGES, **params: Any) -> list[dict[str, Any]]:
    """Every chunk of one streamed mock answer."""
    stream = MockCerebrasClient().stream_chat(MODEL, messages, stream=True, **params)
    return [chunk async for arrived in stream for chunk in arrived]


def streamed_text(parts: list[dict[str, Any]]) -> str:
    """The content pieces of a stream, joined."""
    return "".join(
        choice["delta"].get("content") or "" for part in parts for choice in part["choices"]
    )


def streamed_usage(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every usage a stream carried."""
    return [part["usage"] for part in parts if "usage" in part]


# --------------------------------------------------------------------------- determinism


@pytest.mark.anyio
async def test_same_request_gives_an_identical_answer() -> None:
    first = await chat(temperature=0.5, seed=1)
    second = await chat(seed=1, temperature=0.5)

    assert first == second


@pytest.mark.anyio
async def test_same_request_gives_identical_chunks() -> None:
    assert await chunks(max_completion_tokens=50) == await chunks(max_completion_tokens=50)


@pytest.mark.anyio
async def test_answer_is_a_stable_echo_of_the_last_user_message() -> None:
    messages = [*MESSAGES, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "b"}]

    answer = await chat(messages)

    assert answer == {
        "id": answer["id"],
        "object": "chat.completion",
        "created": MOCK_CREATED,
        "model": MODEL,
        "system_fingerprint": MOCK_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "[mock] You said: b"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10},
    }
    assert answer["id"].startswith("chatcmpl-mock-")


@pytest.mark.anyio
async def test_user_text_parts_are_joined() -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        }
    ]

    answer = await chat(messages)

    assert answer["choices"][0]["message"]["content"] == "[mock] You said: one two"


@pytest.mark.anyio
async def test_streamed_text_equals_the_non_streamed_content_with_the_same_id() -> None:
    answer = await chat()
    parts = await chunks()

    assert streamed_text(parts) == answer["choices"][0]["message"]["content"]
    assert {part["id"] for part in parts} == {answer["id"]}
    assert {part["system_fingerprint"] for part in parts} == {MOCK_FINGERPRINT}


@pytest.mark.anyio
async def test_stream_options_do_not_change_the_answer() -> None:
    answer = await chat()
    parts = await chunks(stream_options={"include_usage": True})

    assert {part["id"] for part in parts} == {answer["id"]}


@pytest.mark.anyio
async def test_streamed_usage_equals_the_non_streamed_usage() -> None:
    answer = await chat()
    parts = await chunks()

    assert streamed_usage(parts) == [answer["usage"]]
    assert "usage" in parts[-1]
    assert parts[-1]["choices"][0]["finish_reason"] == answer["choices"][0]["finish_reason"]


@pytest.mark.anyio
async def test_stream_starts_with_the_role_and_ends_with_the_finish() -> None:
    parts = await chunks()

    assert parts[0]["choices"] == [{"delta": {"role": "assistant"}, "index": 0}]
    assert parts[-1]["choices"] == [{"delta": {}, "index": 0, "finish_reason": "stop"}]
    assert all("finish_reason" not in part["choices"][0] for part in parts[:-1])


@pytest.mark.anyio
async def test_different_last_user_message_gives_a_different_answer() -> None:
    first = await chat([{"role": "user", "content": "apples"}])
    second = await chat([{"role": "user", "content": "pears"}])

    assert first["id"] != second["id"]
    assert first["choices"][0]["message"]["content"] != second["choices"][0]["message"]["content"]


# --------------------------------------------------------------------------- request-dependent


@pytest.mark.anyio
async def test_max_completion_tokens_cuts_the_answer_with_length() -> None:
    answer = await chat(max_completion_tokens=2)
    parts = await chunks(max_completion_tokens=2)

    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["choices"][0]["message"]["content"] == "[mock] You"
    assert answer["usage"]["completion_tokens"] == 2
    assert streamed_text(parts) == "[mock] You"
    assert parts[-1]["choices"][0]["finish_reason"] == "length"
    assert streamed_usage(parts) == [answer["usage"]]


@pytest.mark.anyio
async def test_max_tokens_also_cuts_the_answer() -> None:
    answer = await chat(max_tokens=3)

    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 3


@pytest.mark.anyio
async def test_a_large_token_limit_does_not_cut() -> None:
    answer = await chat(max_completion_tokens=100)

    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][0]["message"]["content"] == "[mock] You said: hello there"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    ],
)
async def test_json_response_format_gives_json_content(response_format: dict[str, Any]) -> None:
    answer = await chat(response_format=response_format)
    parts = await chunks(response_format=response_format)

    content = answer["choices"][0]["message"]["content"]
    assert json.loads(content) == {"mock": True, "echo": "hello there"}
    assert json.loads(streamed_text(parts)) == {"mock": True, "echo": "hello there"}


@pytest.mark.anyio
async def test_tool_choice_required_gives_a_tool_call() -> None:
    answer = await chat(tools=TOOLS, tool_choice="required")

    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call == {
        "id": call["id"],
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }
    assert call["id"].startswith("call_mock_")


@pytest.mark.anyio
async def test_tool_choice_naming_a_function_calls_it() -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}

    answer = await chat(tools=TOOLS, tool_choice=choice)

    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_time"


@pytest.mark.anyio
async def test_streamed_tool_call_matches_the_non_streamed_one() -> None:
    answer = await chat(tools=TOOLS, tool_choice="required")
    parts = await chunks(tools=TOOLS, tool_choice="required")

    (call,) = answer["choices"][0]["message"]["tool_calls"]
    streamed_calls = [
        tool_call
        for part in parts
        for choice in part["choices"]
        for tool_call in choice["delta"].get("tool_calls") or []
    ]
    assert streamed_calls == [{"index": 0, **call}]
    assert parts[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert streamed_usage(parts) == [answer["usage"]]


@pytest.mark.anyio
@pytest.mark.parametrize("tool_choice", ["auto", "none"])
async def test_tool_choice_that_does_not_force_a_call_gives_text(tool_choice: str) -> None:
    answer = await chat(tools=TOOLS, tool_choice=tool_choice)

    assert "tool_calls" not in answer["choices"][0]["message"]
    assert answer["choices"][0]["finish_reason"] == "stop"


@pytest.mark.anyio
async def test_list_models_is_fixed() -> None:
    models = await MockCerebrasClient().list_models()

    assert models == [
        {"id": model, "object": "model", "created": MOCK_CREATED, "owned_by": "cerebras"}
        for model in ("gpt-oss-120b", "zai-glm-4.7", "llama3.1-8b")
    ]
    assert await MockCerebrasClient().list_models() == models


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["gpt-oss-120b", "zai-glm-4.7", "llama3.1-8b"])
async def test_every_listed_model_is_served(model: str) -> None:
    answer = await MockCerebrasClient().chat(model, MESSAGES)

    assert answer["model"] == model


def test_mock_client_says_it_is_a_mock() -> None:
    client = MockCerebrasClient()

    assert MockCerebrasClient.is_mock is True
    assert repr(client) == "MockCerebrasClient()"
    assert client.with_connect_timeout(1.0) is client


# --------------------------------------------------------------------------- after mapping


REQUEST_CASES: list[dict[str, Any]] = [
    {},
    {"max_completion_tokens": 2},
    {"response_format": {"type": "json_object"}},
    {"tools": TOOLS, "tool_choice": "required"},
    {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]}]},
]


@pytest.mark.anyio
@pytest.mark.parametrize("overrides", REQUEST_CASES)
async def test_mapped_completion_is_valid(overrides: dict[str, Any]) -> None:
    provider = CerebrasProvider(MockCerebrasClient())

    completion = await provider.chat_completions(chat_request(**overrides))

    body = completion.data
    assert_completion(body)
    OpenAIChatCompletion.model_validate(body)
    assert body["system_fingerprint"] == MOCK_FINGERPRINT
    assert provider.is_mock is True


@pytest.mark.anyio
@pytest.mark.parametrize("overrides", REQUEST_CASES)
async def test_mapped_chunks_are_valid_and_match_the_completion(overrides: dict[str, Any]) -> None:
    provider = CerebrasProvider(MockCerebrasClient())
    completion = await provider.chat_completions(chat_request(**overrides))

    bodies = [
        chunk.data
        async for arrived in provider.stream_chat_completions(
            chat_request(stream=True, **overrides)
        )
        for chunk in arrived
    ]

    for body in bodies:
        assert_chunk(body)
        OpenAIChatCompletionChunk.model_validate(body)
    choice = completion.data["choices"][0]
    assert {body["id"] for body in bodies} == {completion.id}
    assert streamed_text(bodies) == (choice["message"]["content"] or "")
    assert bodies[-1]["choices"] == []
    assert bodies[-1]["usage"] == completion.data["usage"]
    assert [b["choices"][0]["finish_reason"] for b in bodies[:-1]] == [None] * (len(bodies) - 2) + [
        choice["finish_reason"]
    ]


@pytest.mark.anyio
async def test_mapped_model_list_is_valid() -> None:
    provider = CerebrasProvider(MockCerebrasClient())

    cards = await provider.list_models()

    assert cards == [
        ModelCard(id=model, created=MOCK_CREATED, owned_by="cerebras")
        for model in ("gpt-oss-120b", "zai-glm-4.7", "llama3.1-8b")
    ]
    assert_model_list(ModelList(data=cards).model_dump(mode="json"))


# --------------------------------------------------------------------------- refusals


def tool(function: object, kind: object = "function") -> dict[str, Any]:
    """A tools entry (or a tool_choice object) with any function value."""
    return {"type": kind, "function": function}


ROLES = "system, developer, user, assistant, tool"
TOOL_CHOICE = "'none', 'auto', 'required' or a function object"
FORMAT_TYPES = "'text', 'json_object' or 'json_schema'"

# (request parameters, the parameter Cerebras names, what it expected there)
REFUSALS: list[tuple[dict[str, Any], str, str]] = [
    ({"max_tokens": 0}, "max_tokens", "an integer of at least 1"),
    ({"max_tokens": -5}, "max_tokens", "an integer of at least 1"),
    ({"max_tokens": "10"}, "max_tokens", "an integer of at least 1"),
    ({"max_completion_tokens": 0}, "max_completion_tokens", "an integer of at least 1"),
    ({"max_completion_tokens": True}, "max_completion_tokens", "an integer of at least 1"),
    ({"max_completion_tokens": 2.5}, "max_completion_tokens", "an integer of at least 1"),
    ({"n": 2}, "n", "1 (one choice per request)"),
    ({"n": 0}, "n", "1 (one choice per request)"),
    ({"n": True}, "n", "1 (one choice per request)"),
    ({"tool_choice": "any"}, "tool_choice", TOOL_CHOICE),
    ({"tool_choice": 5}, "tool_choice", TOOL_CHOICE),
    ({"tool_choice": ["auto"]}, "tool_choice", TOOL_CHOICE),
    ({"tool_choice": tool(5)}, "tool_choice.function", "an object"),
    ({"tool_choice": tool({"name": 5})}, "tool_choice.function.name", "a string"),
    ({"tool_choice": {"function": {"name": "f"}}}, "tool_choice.type", "'function'"),
    ({"tools": TOOLS[0]}, "tools", "an array of tools"),
    ({"tools": ["get_weather"]}, "tools[0]", "an object"),
    ({"tools": [tool({"name": "f"}, kind="custom")]}, "tools[0].type", "'function'"),
    ({"tools": [{"type": "function"}]}, "tools[0].function", "an object"),
    ({"tools": [tool({})]}, "tools[0].function.name", "a string"),
    (
        {"tools": [TOOLS[0], tool({"name": "f", "parameters": []})]},
        "tools[1].function.parameters",
        "an object",
    ),
    ({"tools": [tool({"name": "f", "strict": "yes"})]}, "tools[0].function.strict", "a boolean"),
    (
        {"tools": [tool({"name": "f", "description": 1})]},
        "tools[0].function.description",
        "a string",
    ),
    ({"response_format": "json_object"}, "response_format", "an object"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", FORMAT_TYPES),
    ({"response_format": {}}, "response_format.type", FORMAT_TYPES),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "an object"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
        "response_format.json_schema.name",
        "a string",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": "{}"}}},
        "response_format.json_schema.schema",
        "an object",
    ),
    ({"reasoning_effort": "minimal"}, "reasoning_effort", "one of none, low, medium, high"),
    (
        {"reasoning_format": "json"},
        "reasoning_format",
        "one of none, parsed, text_parsed, raw, hidden",
    ),
    ({"service_tier": "scale"}, "service_tier", "one of auto, default, flex, priority"),
]
ACCEPTED: list[dict[str, Any]] = [
    {"max_tokens": None, "n": None, "tool_choice": None, "tools": None, "response_format": None},
    {"max_tokens": 1, "max_completion_tokens": 1, "n": 1},
    {"tools": [], "tool_choice": "none"},
    {"tools": [tool({"name": "f", "description": None, "parameters": {}, "strict": True})]},
    {"response_format": {"type": "text"}},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": False}}},
    {"reasoning_effort": "low", "reasoning_format": "parsed", "service_tier": "flex"},
    {"temperature": 7, "top_p": "odd", "unknown_field": [1, {"x": None}]},
]


def envelope(param: str, message: str, code: str = "invalid_value") -> dict[str, Any]:
    """The OpenAI error body the caller gets for a refusal."""
    body = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return {"error": body}


async def mock_outcome(
    model: str, messages: list[dict[str, Any]], params: dict[str, Any], *, stream: bool
) -> list[dict[str, Any]] | GatewayError:
    """The mock's chunks (or its one completion), or the error it raised."""
    client = MockCerebrasClient()
    try:
        if stream:
            stream = client.stream_chat(model, messages, **params)
            return [chunk async for arrived in stream for chunk in arrived]
        return [await client.chat(model, messages, **params)]
    except GatewayError as error:
        return error


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("params", "param", "expected"), REFUSALS)
async def test_a_value_cerebras_refuses_is_a_400_naming_the_parameter(
    params: dict[str, Any], param: str, expected: str, stream: bool
) -> None:
    error = await mock_outcome(MODEL, MESSAGES, params, stream=stream)

    assert isinstance(error, InvalidRequest)
    assert error.status_code == 400
    assert error.envelope() == envelope(param, f"Invalid '{param}': expected {expected}.")
    assert_error(error.envelope())


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("params", ACCEPTED)
async def test_well_formed_values_are_served(params: dict[str, Any], stream: bool) -> None:
    outcome = await mock_outcome(MODEL, MESSAGES, params, stream=stream)

    assert isinstance(outcome, list)
    assert outcome


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_an_unknown_model_is_a_404_model_not_found(stream: bool) -> None:
    error = await mock_outcome("llama-3.3-70b", MESSAGES, {}, stream=stream)

    assert isinstance(error, InvalidRequest)
    assert error.status_code == 404
    assert error.envelope() == envelope(
        "model",
        "Model llama-3.3-70b does not exist or you do not have access to it. "
        "Mock mode serves gpt-oss-120b, zai-glm-4.7, llama3.1-8b.",
        code="model_not_found",
    )


@pytest.mark.anyio
async def test_the_model_is_checked_before_the_parameters() -> None:
    error = await mock_outcome("any-model", MESSAGES, {"max_tokens": 0}, stream=False)

    assert isinstance(error, InvalidRequest)
    assert (error.status_code, error.code) == (404, "model_not_found")


@pytest.mark.anyio
@pytest.mark.parametrize("role", ["function", "bot", None, 5, ["user"]])
async def test_a_role_cerebras_does_not_know_is_refused(role: object) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": role, "name": "f", "content": "x"}]

    error = await mock_outcome(MODEL, messages, {}, stream=False)

    assert isinstance(error, InvalidRequest)
    expected = f"Invalid 'messages[1].role': expected one of {ROLES}."
    assert error.envelope() == envelope("messages[1].role", expected)


@pytest.mark.anyio
async def test_a_refused_stream_fails_before_its_first_chunk() -> None:
    stream = MockCerebrasClient().stream_chat(MODEL, MESSAGES, stream=True, n=3)

    with pytest.raises(InvalidRequest):
        await anext(stream)


@pytest.mark.anyio
@pytest.mark.parametrize("overrides", [{"model": "any-model"}, {"max_completion_tokens": 0}])
async def test_the_provider_passes_a_refusal_through_unchanged(overrides: dict[str, Any]) -> None:
    provider = CerebrasProvider(MockCerebrasClient())
    request = chat_request(**overrides)

    with pytest.raises(InvalidRequest) as from_chat:
        await provider.chat_completions(request)
    with pytest.raises(InvalidRequest) as from_stream:
        async for _ in provider.stream_chat_completions(chat_request(stream=True, **overrides)):
            pass

    assert from_chat.value.envelope() == from_stream.value.envelope()
    assert from_chat.value.status_code == from_stream.value.status_code


def test_routing_falls_back_on_an_unknown_model_and_stops_on_an_invalid_value() -> None:
    unknown = refusal("any-model", MESSAGES, {})
    invalid = refusal(MODEL, MESSAGES, {"n": 2})

    assert unknown is not None
    assert invalid is not None
    assert classify(unknown, fallback_on_context_length=False) is Outcome.FALL_BACK
    assert classify(invalid, fallback_on_context_length=False) is Outcome.STOP


@pytest.mark.parametrize("messages", [{"role": "user", "content": "hi"}, "hi", 5, None])
def test_messages_that_are_not_an_array_are_refused(messages: Any) -> None:
    error = refusal(MODEL, messages, {})

    assert isinstance(error, InvalidRequest)
    expected = "Invalid 'messages': expected an array of messages."
    assert error.envelope() == envelope("messages", expected)


def test_a_request_cerebras_would_serve_has_no_refusal() -> None:
    assert upstream_answer(MODEL, MESSAGES, {"tools": TOOLS, "tool_choice": "required"}) is None
    assert refusal(MODEL, MESSAGES, {}) is None


# --------------------------------------------------------------------------- the same as real mode


@pytest.fixture(params=["sdk", "native"])
async def real_client(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream
) -> AsyncIterator[CerebrasAPI]:
    """A real-mode client over one transport, pointed at the fake upstream."""
    if request.param == "sdk":
        sdk_client = CerebrasClient(UPSTREAM_KEY, base_url=fake_upstream.url, timeout=2.0)
        yield sdk_client
        await sdk_client.aclose()
        return
    wire = WireClient(timeout=2.0)
    yield OpenAIWire(
        wire, provider="cerebras", base_url=f"{fake_upstream.url}/v1", api_key=UPSTREAM_KEY
    )
    await wire.aclose()


PARITY_CASES: list[tuple[str, dict[str, Any]]] = [
    ("any-model", {}),
    (MODEL, {"max_tokens": 0}),
    (MODEL, {"tool_choice": tool(5)}),
    (MODEL, {"response_format": {"type": "json_schema"}}),
]


async def real_outcome(
    client: CerebrasAPI, model: str, params: dict[str, Any], *, stream: bool
) -> list[dict[str, Any]]:
    """What a real-mode client gives for the request: its chunks or its one completion."""
    if stream:
        stream = client.stream_chat(model, MESSAGES, **params)
        return [chunk async for arrived in stream for chunk in arrived]
    return [await client.chat(model, MESSAGES, **params)]


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("model", "params"), PARITY_CASES)
async def test_a_refusal_is_the_error_real_mode_raises_for_the_same_answer(
    real_client: CerebrasAPI,
    fake_upstream: FakeUpstream,
    model: str,
    params: dict[str, Any],
    stream: bool,
) -> None:
    answer = upstream_answer(model, MESSAGES, params)
    assert answer is not None
    status, body = answer
    fake_upstream.reply(json_reply(body, status=status))
    mocked = await mock_outcome(model, MESSAGES, params, stream=stream)

    with pytest.raises(GatewayError) as real:
        await real_outcome(real_client, model, params, stream=stream)

    assert isinstance(mocked, GatewayError)
    assert type(real.value) is type(mocked)
    assert real.value.status_code == mocked.status_code
    assert real.value.envelope() == mocked.envelope()
    assert real.value.headers == mocked.headers


# --------------------------------------------------------------------------- totality


ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2,
    1.5,
    "",
    "auto",
    "required",
    "json_object",
    [],
    [1],
    [None],
    ["x"],
    [[]],
    {},
    {"type": None},
    {"type": "function"},
    {"type": "function", "function": 5},
    {"type": "function", "function": []},
    {"type": "function", "function": {"name": 5}},
    {"type": "function", "function": {"name": ""}},
    {"type": "json_schema"},
    {"type": "json_schema", "json_schema": []},
    {"type": ["json_object"]},
    [{"type": "function", "function": {"name": []}}],
    [{"type": "function", "function": None}],
    [{"function": {"name": "f"}}],
    [5, {"type": "function"}],
]
ODD_FIELDS = [
    "max_tokens",
    "max_completion_tokens",
    "n",
    "tool_choice",
    "tools",
    "response_format",
    "reasoning_effort",
    "reasoning_format",
    "service_tier",
    "stream_options",
    "stop",
    "seed",
    "unknown_field",
]


def odd_params(field: str) -> list[dict[str, Any]]:
    """Every odd value in one field, alone and next to what makes the mock read it."""
    if field == "tool_choice":
        return [{"tool_choice": value, "tools": TOOLS} for value in ODD_VALUES]
    if field == "tools":
        return [{"tool_choice": "required", "tools": value} for value in ODD_VALUES]
    if field == "response_format":
        return [{"response_format": value, "max_tokens": 2} for value in ODD_VALUES]
    return [{field: value} for value in ODD_VALUES]


ODD_CONTENT: list[Any] = [
    None,
    5,
    "",
    [],
    [5],
    [None],
    [{"type": "text"}],
    [{"type": "text", "text": 5}],
    [{"type": "image_url", "image_url": {"url": "x"}}],
    {"text": "x"},
]
ODD_MESSAGES: list[list[Any]] = [
    [],
    ["hi"],
    [5],
    [None],
    [[]],
    [{}],
    [{"role": 5}],
    [{"role": ["user"], "content": "x"}],
    *([{"role": "user", "content": content}] for content in ODD_CONTENT),
]


async def assert_answer_or_refusal(
    messages: list[Any], params: dict[str, Any], *, stream: bool
) -> None:
    """The mock serves a well-formed answer or refuses with a 400; nothing else."""
    outcome = await mock_outcome(MODEL, messages, params, stream=stream)
    if isinstance(outcome, GatewayError):
        assert isinstance(outcome, InvalidRequest), (messages, params)
        assert outcome.status_code == 400, (messages, params)
        assert_error(outcome.envelope())
        return
    if not stream:
        assert_completion(to_completion("cerebras", outcome[0]).data)
        return
    normalizer = ChunkNormalizer("cerebras")
    for data in outcome:
        for chunk in normalizer.feed(data):
            assert_chunk(chunk.data)
    normalizer.check_finished()


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("field", ODD_FIELDS)
async def test_any_json_parameter_gives_an_answer_or_a_400(field: str, stream: bool) -> None:
    for params in odd_params(field):
        await assert_answer_or_refusal(MESSAGES, params, stream=stream)


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_any_json_messages_give_an_answer_or_a_400(stream: bool) -> None:
    for messages in ODD_MESSAGES:
        await assert_answer_or_refusal(messages, {}, stream=stream)


@pytest.mark.parametrize("value", ODD_VALUES, ids=lambda value: json.dumps(value))
def test_every_helper_is_total(value: Any) -> None:
    params = {
        "tool_choice": value,
        "tools": value,
        "response_format": value,
        "max_tokens": value,
        "max_completion_tokens": value,
    }

    name = requested_tool(params)
    text, finish = answer_text([], params)
    answer = MockAnswer.for_request(MODEL, [value, {"role": "user", "content": value}], params)

    assert name is None or isinstance(name, str)
    assert isinstance(text, str)
    assert finish in ("stop", "length")
    assert message_text(value) == ""
    assert answer.completion()["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
    assert answer.chunks()[-1]["usage"] == answer.usage()


def test_tool_choice_function_not_an_object_forces_no_call() -> None:
    assert requested_tool({"tool_choice": tool(5), "tools": TOOLS}) is None
    assert requested_tool({"tool_choice": "required", "tools": [5]}) is None
    assert requested_tool({"tool_choice": "required", "tools": {"a": 1}}) is None
