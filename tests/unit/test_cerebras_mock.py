"""MockCerebrasClient: deterministic answers, streams that match them, spec-valid after mapping."""

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion as OpenAIChatCompletion
from openai.types.chat import ChatCompletionChunk as OpenAIChatCompletionChunk

from ai_gateway.providers.cerebras import CerebrasProvider
from ai_gateway.providers.cerebras_mock import (
    MOCK_CREATED,
    MOCK_FINGERPRINT,
    MockCerebrasClient,
)
from ai_gateway.schemas import ModelCard, ModelList
from tests.fakes import MODEL, chat_request
from tests.openai_spec import assert_chunk, assert_completion, assert_model_list

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
    return [chunk async for chunk in stream]


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


def test_mock_client_says_it_is_a_mock() -> None:
    assert MockCerebrasClient.is_mock is True
    assert repr(MockCerebrasClient()) == "MockCerebrasClient()"


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
        async for chunk in provider.stream_chat_completions(chat_request(stream=True, **overrides))
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
