"""CerebrasProvider: OpenAI request -> client call, client reply -> exact OpenAI shapes."""

import copy
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest
from openai.types.chat import ChatCompletion as OpenAIChatCompletion
from openai.types.chat import ChatCompletionChunk as OpenAIChatCompletionChunk

from ai_gateway.errors import GatewayError, ProviderError, RateLimited, UpstreamTimeout
from ai_gateway.providers.cerebras import CerebrasProvider
from ai_gateway.providers.cerebras_client import CerebrasAPI
from ai_gateway.providers.registry import Registry
from ai_gateway.schemas import ChatCompletionChunk, ModelCard, as_python, python_params
from tests.conftest import make_settings, serve_app
from tests.fakes import (
    MODEL,
    NORMALISED_COMPLETION,
    chat_request,
    chunk_payloads,
    completion_payload,
)
from tests.openai_spec import assert_chunk, assert_completion, assert_error
from tests.streams import drain


@dataclass
class Call:
    """One call the provider made to the client."""

    method: str
    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]


@dataclass
class RecordingClient:
    """A CerebrasAPI that records every call and answers with canned dicts (or raises)."""

    completion: dict[str, Any] = field(default_factory=completion_payload)
    chunks: list[dict[str, Any]] = field(default_factory=chunk_payloads)
    models: list[dict[str, Any]] = field(
        default_factory=lambda: [{"id": MODEL, "object": "model", "created": 5, "owned_by": "c"}]
    )
    error: Exception | None = None
    is_mock: bool = False
    calls: list[Call] = field(default_factory=list)
    models_calls: int = 0
    streams_closed: int = 0
    closed: bool = False

    async def chat(self, model: str, messages: msgspec.Raw, **params: Any) -> dict[str, Any]:
        self.calls.append(Call("chat", model, as_python(messages), python_params(params)))
        if self.error is not None:
            raise self.error
        return copy.deepcopy(self.completion)

    async def stream_chat(
        self, model: str, messages: msgspec.Raw, **params: Any
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        self.calls.append(Call("stream", model, as_python(messages), python_params(params)))
        try:
            if self.error is not None:
                raise self.error
            for chunk in copy.deepcopy(self.chunks):
                yield [chunk]
        finally:
            self.streams_closed += 1

    async def list_models(self) -> list[dict[str, Any]]:
        self.models_calls += 1
        if self.error is not None:
            raise self.error
        return copy.deepcopy(self.models)

    async def aclose(self) -> None:
        self.closed = True


def as_api(client: RecordingClient) -> CerebrasAPI:
    """The fake, checked against the protocol the provider takes."""
    api: CerebrasAPI = client
    return api


async def complete(client: RecordingClient, **overrides: Any) -> dict[str, Any]:
    """One completion through the provider, as the caller sees it (validated twice)."""
    provider = CerebrasProvider(as_api(client))
    body = (await provider.chat_completions(chat_request(**overrides))).data
    assert_completion(body)
    OpenAIChatCompletion.model_validate(body)
    return body


async def stream(client: RecordingClient, **overrides: Any) -> list[dict[str, Any]]:
    """Every chunk through the provider, as the caller sees it (each validated twice)."""
    provider = CerebrasProvider(as_api(client))
    chunks: list[ChatCompletionChunk] = [
        chunk
        async for arrived in provider.stream_chat_completions(chat_request(**overrides))
        for chunk in arrived
    ]
    bodies = [chunk.data for chunk in chunks]
    for body in bodies:
        assert_chunk(body)
        OpenAIChatCompletionChunk.model_validate(body)
    return bodies


ALL_ROLES: list[dict[str, Any]] = [
    {"role": "system", "content": "be brief", "name": "sys"},
    {"role": "developer", "content": [{"type": "text", "text": "dev rules"}]},
    {
        "role": "user",
        "content": [{"type": "text", "text": "weather?"}, {"type": "text", "text": "in Rome"}],
        "name": "ann",
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "assistant", "content": "It is sunny.", "reasoning": "looked it up"},
    {"role": "user", "content": "thanks", "unknown_message_field": {"x": [1]}},
]

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": True,
        },
    }
]

JSON_SCHEMA_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
        "strict": True,
    },
}

PARAM_CASES: list[dict[str, Any]] = [
    {"tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": False},
    {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "weather"}}},
    {"response_format": {"type": "json_object"}},
    {"response_format": JSON_SCHEMA_FORMAT},
    {"max_tokens": 7},
    {"max_completion_tokens": 9},
    {"stop": "END"},
    {"stop": ["END", "STOP"]},
    {"seed": 42, "temperature": 0.3, "top_p": 0.9},
    {"user": "user-1", "logprobs": True, "top_logprobs": 2},
    {"reasoning_effort": "high"},
    {"foo": {"bar": 1}, "timeout": 5, "service_tier": "flex", "min_tokens": 1},
]


@pytest.mark.anyio
async def test_every_role_reaches_the_client_exactly_as_given() -> None:
    client = RecordingClient()

    await complete(client, messages=ALL_ROLES)

    assert client.calls == [Call("chat", MODEL, ALL_ROLES, {})]


@pytest.mark.anyio
@pytest.mark.parametrize("params", PARAM_CASES)
async def test_params_reach_the_client_exactly_as_given(params: dict[str, Any]) -> None:
    client = RecordingClient()

    await complete(client, **params)

    assert client.calls == [Call("chat", MODEL, [{"role": "user", "content": "hello"}], params)]


@pytest.mark.anyio
async def test_all_params_together_reach_the_client_exactly_as_given() -> None:
    client = RecordingClient()
    params: dict[str, Any] = {}
    for case in PARAM_CASES:
        params.update(case)

    await complete(client, messages=ALL_ROLES, **params)

    assert client.calls == [Call("chat", MODEL, ALL_ROLES, params)]


@pytest.mark.anyio
@pytest.mark.parametrize("params", PARAM_CASES)
async def test_stream_params_reach_the_client_with_stream_and_usage(
    params: dict[str, Any],
) -> None:
    client = RecordingClient()

    await stream(client, stream=True, **params)

    expected = {**params, "stream": True, "stream_options": {"include_usage": True}}
    assert client.calls == [Call("stream", MODEL, [{"role": "user", "content": "hello"}], expected)]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "stream_options",
    [None, {"include_usage": False}, {"include_usage": True}, {"future_option": 1}],
)
async def test_stream_always_asks_upstream_for_usage(stream_options: dict[str, Any] | None) -> None:
    client = RecordingClient()
    overrides = {"stream_options": stream_options} if stream_options is not None else {}

    await stream(client, stream=True, **overrides)

    (call,) = client.calls
    assert call.params == {
        "stream": True,
        "stream_options": {**(stream_options or {}), "include_usage": True},
    }


@pytest.mark.anyio
async def test_non_streaming_call_passes_stream_options_through() -> None:
    client = RecordingClient()

    await complete(client, stream=False, stream_options={"include_usage": True})

    assert client.calls[0].params == {"stream": False, "stream_options": {"include_usage": True}}


@pytest.mark.anyio
async def test_raw_cerebras_completion_becomes_a_valid_openai_completion() -> None:
    body = await complete(RecordingClient())

    assert body == NORMALISED_COMPLETION


@pytest.mark.anyio
async def test_documented_cerebras_body_keeps_reasoning_and_extra_fields() -> None:
    payload = completion_payload(service_tier=None)
    payload["choices"][0] = {
        "finish_reason": "stop",
        "index": 0,
        "message": {
            "role": "assistant",
            "content": "Hello!",
            "reasoning": "The user says hi.",
            "tool_calls": None,
        },
        "logprobs": None,
        "reasoning_logprobs": None,
    }
    payload["usage"]["prompt_tokens_details"] = {"cached_tokens": 0}

    body = await complete(RecordingClient(completion=payload))

    assert body["choices"] == [
        {
            "finish_reason": "stop",
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello!",
                "reasoning": "The user says hi.",
                "refusal": None,
            },
            "logprobs": None,
            "reasoning_logprobs": None,
        }
    ]
    assert body["time_info"] == payload["time_info"]
    assert body["usage"] == payload["usage"]
    assert body["service_tier"] is None


@pytest.mark.anyio
async def test_missing_id_gets_a_chatcmpl_id() -> None:
    payload = completion_payload()
    del payload["id"]

    body = await complete(RecordingClient(completion=payload))

    assert body["id"].startswith("chatcmpl-")
    assert len(body["id"]) > len("chatcmpl-")


@pytest.mark.anyio
async def test_missing_usage_becomes_zeros() -> None:
    payload = completion_payload()
    del payload["usage"]

    body = await complete(RecordingClient(completion=payload))

    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@pytest.mark.anyio
async def test_usage_without_total_gets_the_sum() -> None:
    payload = completion_payload(usage={"prompt_tokens": 4, "completion_tokens": 6})

    body = await complete(RecordingClient(completion=payload))

    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}


@pytest.mark.anyio
async def test_float_created_becomes_an_int() -> None:
    payload = completion_payload(created=1761231230.987)

    body = await complete(RecordingClient(completion=payload))

    assert body["created"] == 1761231230


@pytest.mark.anyio
async def test_tool_call_reply_keeps_the_calls() -> None:
    tool_call = {
        "id": "27781e665",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
    }
    payload = completion_payload()
    payload["choices"][0] = {
        "finish_reason": "tool_calls",
        "index": 0,
        "message": {"role": "assistant", "tool_calls": [tool_call]},
    }

    body = await complete(RecordingClient(completion=payload))

    assert body["choices"] == [
        {
            "finish_reason": "tool_calls",
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [tool_call],
            },
            "logprobs": None,
        }
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(("upstream", "expected"), [("eos", "stop"), (None, "stop")])
async def test_unknown_or_missing_finish_reason_becomes_stop(
    upstream: str | None, expected: str
) -> None:
    payload = completion_payload()
    payload["choices"][0]["finish_reason"] = upstream

    body = await complete(RecordingClient(completion=payload))

    assert body["choices"][0]["finish_reason"] == expected


@pytest.mark.anyio
async def test_chunks_get_null_finish_reasons_and_a_separate_usage_chunk() -> None:
    bodies = await stream(RecordingClient(), stream=True)

    head = {
        "id": "chatcmpl-upstream-2",
        "object": "chat.completion.chunk",
        "created": 1761231233,
        "model": MODEL,
        "system_fingerprint": "fp_upstream",
    }

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"delta": delta, "index": 0, "logprobs": None, "finish_reason": finish}

    assert bodies == [
        {**head, "choices": [choice({"role": "assistant"})]},
        {**head, "choices": [choice({"content": "Hel"})]},
        {**head, "choices": [choice({"content": "lo"})]},
        {**head, "choices": [choice({})]},
        {**head, "choices": [choice({}, "stop")], "time_info": {"total_time": 0.1}},
        {
            **head,
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        },
    ]


@pytest.mark.anyio
async def test_streamed_tool_call_keeps_the_call_and_its_finish_reason() -> None:
    call = {
        "function": {"name": "weather", "arguments": '{"location": "Florence,Italy"}'},
        "type": "function",
        "id": "27781e665",
        "index": 0,
    }
    chunks = chunk_payloads((), finish="tool_calls")
    chunks[1]["choices"][0]["delta"] = {"tool_calls": [call]}

    bodies = await stream(RecordingClient(chunks=chunks), stream=True)

    assert bodies[1]["choices"][0]["delta"] == {"tool_calls": [call]}
    assert bodies[1]["choices"][0]["finish_reason"] is None
    assert bodies[-2]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.anyio
async def test_stream_without_usage_has_no_usage_chunk() -> None:
    chunks = chunk_payloads()
    del chunks[-1]["usage"]

    bodies = await stream(RecordingClient(chunks=chunks), stream=True)

    assert len(bodies) == len(chunks)
    assert all("usage" not in body for body in bodies)
    assert bodies[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.anyio
async def test_chunks_without_ids_share_one_generated_id() -> None:
    chunks = chunk_payloads()
    for chunk in chunks:
        del chunk["id"]

    bodies = await stream(RecordingClient(chunks=chunks), stream=True)

    ids = {body["id"] for body in bodies}
    assert len(ids) == 1
    assert ids.pop().startswith("chatcmpl-")


@pytest.mark.anyio
async def test_closing_the_provider_stream_closes_the_client_stream() -> None:
    client = RecordingClient()
    provider = CerebrasProvider(as_api(client))
    chunks = provider.stream_chat_completions(chat_request(stream=True))

    await anext(chunks)
    await chunks.aclose()

    assert client.streams_closed == 1


@pytest.mark.anyio
@pytest.mark.parametrize("choices", [[], None, "absent"])
async def test_completion_without_choices_is_a_502(choices: Any) -> None:
    payload = completion_payload()
    if choices == "absent":
        del payload["choices"]
    else:
        payload["choices"] = choices
    provider = CerebrasProvider(as_api(RecordingClient(completion=payload)))

    with pytest.raises(ProviderError) as info:
        await provider.chat_completions(chat_request())

    assert info.value.status_code == 502
    assert "malformed" in info.value.message


@pytest.mark.anyio
async def test_completion_that_is_not_a_completion_is_a_502() -> None:
    payload = completion_payload()
    payload["choices"][0]["message"]["role"] = "user"
    provider = CerebrasProvider(as_api(RecordingClient(completion=payload)))

    with pytest.raises(ProviderError) as info:
        await provider.chat_completions(chat_request())

    assert info.value.status_code == 502


@pytest.mark.anyio
async def test_error_body_in_place_of_a_completion_is_rate_limited() -> None:
    payload = {"error": {"message": "queue is full", "type": "too_many"}, "status_code": 429}
    provider = CerebrasProvider(as_api(RecordingClient(completion=payload)))

    with pytest.raises(RateLimited) as info:
        await provider.chat_completions(chat_request())

    assert (info.value.status_code, info.value.message) == (429, "queue is full")


@pytest.mark.anyio
async def test_error_body_without_status_is_a_502() -> None:
    provider = CerebrasProvider(as_api(RecordingClient(completion={"error": {"message": "x"}})))

    with pytest.raises(ProviderError) as info:
        await provider.chat_completions(chat_request())

    assert info.value.status_code == 502


@pytest.mark.anyio
async def test_error_chunk_mid_stream_raises_after_the_earlier_chunks() -> None:
    chunks = chunk_payloads()
    error = {"error": {"message": "queue is full"}, "status_code": 429}
    provider = CerebrasProvider(as_api(RecordingClient(chunks=[chunks[0], error, chunks[1]])))
    received: list[ChatCompletionChunk] = []

    with pytest.raises(RateLimited):
        await drain(provider.stream_chat_completions(chat_request(stream=True)), received)

    assert [c.data["choices"][0]["delta"]["role"] for c in received] == ["assistant"]


@pytest.mark.anyio
async def test_completion_with_a_non_object_message_is_a_502() -> None:
    payload = completion_payload()
    payload["choices"][0]["message"] = "hi there"
    provider = CerebrasProvider(as_api(RecordingClient(completion=payload)))

    with pytest.raises(ProviderError) as info:
        await provider.chat_completions(chat_request())

    assert info.value.status_code == 502


@pytest.mark.anyio
async def test_chunk_with_a_non_object_delta_is_a_502() -> None:
    chunks = chunk_payloads()
    chunks[1]["choices"] = [{"index": 0, "delta": "Hel"}]
    provider = CerebrasProvider(as_api(RecordingClient(chunks=chunks)))

    with pytest.raises(ProviderError) as info:
        await drain(provider.stream_chat_completions(chat_request(stream=True)), [])

    assert info.value.status_code == 502


@pytest.mark.anyio
async def test_stream_that_ends_before_a_finish_reason_is_a_502_after_its_chunks() -> None:
    chunks = chunk_payloads()[:3]
    provider = CerebrasProvider(as_api(RecordingClient(chunks=chunks)))
    received: list[ChatCompletionChunk] = []

    with pytest.raises(ProviderError) as info:
        await drain(provider.stream_chat_completions(chat_request(stream=True)), received)

    assert len(received) == 3
    assert info.value.status_code == 502


@pytest.mark.anyio
async def test_client_errors_propagate_unchanged() -> None:
    error = UpstreamTimeout("cerebras timed out")
    provider = CerebrasProvider(as_api(RecordingClient(error=error)))

    with pytest.raises(ProviderError) as info:
        await provider.chat_completions(chat_request())

    assert info.value is error


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_list_models_maps_entries_to_cards() -> None:
    models = [
        {"id": MODEL, "object": "model", "created": 5, "owned_by": "Cerebras"},
        {"id": "zai-glm-4.7", "object": "model", "created": 1.5},
    ]
    provider = CerebrasProvider(as_api(RecordingClient(models=models)))

    cards = await provider.list_models()

    assert cards == [
        ModelCard(id=MODEL, created=5, owned_by="Cerebras"),
        ModelCard(id="zai-glm-4.7", created=0, owned_by="cerebras"),
    ]


@pytest.mark.anyio
async def test_list_models_is_cached_for_the_ttl() -> None:
    client = RecordingClient()
    clock = Clock()
    provider = CerebrasProvider(as_api(client), models_ttl_s=60, clock=clock)

    first = await provider.list_models()
    clock.now += 59.9
    second = await provider.list_models()

    assert client.models_calls == 1
    assert second == first

    clock.now += 0.1
    client.models = [{"id": "new-model", "object": "model", "created": 1, "owned_by": "c"}]
    third = await provider.list_models()

    assert client.models_calls == 2
    assert [card.id for card in third] == ["new-model"]


@pytest.mark.anyio
async def test_list_models_failure_is_not_cached() -> None:
    client = RecordingClient(error=ProviderError("down"))
    provider = CerebrasProvider(as_api(client), models_ttl_s=60, clock=Clock())

    with pytest.raises(ProviderError):
        await provider.list_models()
    client.error = None
    cards = await provider.list_models()

    assert [card.id for card in cards] == [MODEL]
    assert client.models_calls == 2


@pytest.mark.anyio
async def test_model_without_an_id_is_a_502() -> None:
    provider = CerebrasProvider(as_api(RecordingClient(models=[{"object": "model"}])))

    with pytest.raises(ProviderError):
        await provider.list_models()


@pytest.mark.anyio
async def test_provider_reports_mock_mode_and_closes_its_client() -> None:
    client = RecordingClient(is_mock=True)
    provider = CerebrasProvider(as_api(client))

    await provider.aclose()

    assert provider.is_mock is True
    assert provider.name == "cerebras"
    assert client.closed


async def post_through_app(
    error: GatewayError, body: dict[str, Any]
) -> tuple[httpx.Response, RecordingClient]:
    """POST one chat request to an app whose Cerebras client raises `error`."""
    client = RecordingClient(error=error)
    registry = Registry({"cerebras": CerebrasProvider(as_api(client))})
    async with serve_app(make_settings(), registry) as http:
        response = await http.post("/v1/chat/completions", json=body)
    return response, client


@pytest.mark.anyio
@pytest.mark.parametrize("stream_flag", [False, True])
async def test_provider_error_reaches_the_caller_as_a_502_envelope(stream_flag: bool) -> None:
    error = ProviderError("cerebras returned HTTP 503")
    body = {"model": f"cerebras/{MODEL}", "messages": [{"role": "user", "content": "hi"}]}

    response, client = await post_through_app(error, {**body, "stream": stream_flag})

    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    assert response.json() == {
        "error": {
            "message": "cerebras returned HTTP 503",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    assert_error(response.json())
    assert [call.model for call in client.calls] == [MODEL]


@pytest.mark.anyio
async def test_upstream_rate_limit_reaches_the_caller_with_retry_headers() -> None:
    error = RateLimited("slow down", headers={"retry-after": "3"})
    body = {"model": f"cerebras/{MODEL}", "messages": [{"role": "user", "content": "hi"}]}

    response, _ = await post_through_app(error, body)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["x-request-id"]
    assert_error(response.json())
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
