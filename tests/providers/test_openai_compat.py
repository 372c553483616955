"""OpenAI-compatible vendors by spec, over the native wire against the recording fake upstream."""

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

from ai_gateway.errors import ProviderError
from ai_gateway.providers.burst import is_last
from ai_gateway.providers.openai_compat import OpenAICompatProvider
from ai_gateway.providers.registry import build_registry, param_policy
from ai_gateway.providers.specs import SPECS, OpenAICompatSpec
from ai_gateway.providers.wire import OpenAIWire, WireClient
from ai_gateway.schemas import as_python
from tests.conftest import make_settings
from tests.fake_upstream import FakeUpstream, Reply, json_reply, sse_reply
from tests.fakes import chat_request, chunk_payloads, completion_payload
from tests.openai_spec import assert_chunk, assert_completion

VENDOR_KEY = "sk-vendor-test-key-0123456789"
ALL_PARAMS: dict[str, Any] = {
    "temperature": 0.3,
    "logprobs": True,
    "top_logprobs": 2,
    "logit_bias": {"1": 1.0},
    "vendor_extension": {"x": 1},
}


@pytest.fixture
async def wire() -> AsyncIterator[WireClient]:
    client = WireClient(timeout=2.0)
    yield client
    await client.aclose()


def provider_for(spec: OpenAICompatSpec, wire: WireClient, upstream: FakeUpstream) -> Any:
    """The spec's provider, pointed at the fake upstream."""
    local = replace(spec, base_url=f"{upstream.url}/v1")
    key = VENDOR_KEY if spec.requires_key else ""
    client = OpenAIWire(
        wire, provider=spec.name, base_url=local.base_url, api_key=key, headers=spec.headers
    )
    policy = param_policy(spec.name, None, spec.unsupported_params)
    return OpenAICompatProvider(spec.name, client, params=policy)


@pytest.mark.anyio
@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
async def test_each_vendor_gets_its_key_headers_and_only_the_params_it_accepts(
    spec: OpenAICompatSpec, wire: WireClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply(completion_payload(text="from vendor")))
    provider = provider_for(spec, wire, fake_upstream)

    completion = await provider.chat_completions(chat_request(model="m-1", **ALL_PARAMS))

    sent = fake_upstream.requests[-1]
    expected = {k: v for k, v in ALL_PARAMS.items() if k not in spec.unsupported_params}
    assert sent.path == "/v1/chat/completions"
    assert sent.json == {
        "model": "m-1",
        "messages": as_python(chat_request().upstream_messages()),
        **expected,
    }
    if spec.requires_key:
        assert sent.headers["authorization"] == f"Bearer {VENDOR_KEY}"
    else:
        assert "authorization" not in sent.headers
    for name, value in spec.headers.items():
        assert sent.headers[name.lower()] == value
    assert completion.data["choices"][0]["message"]["content"] == "from vendor"
    assert_completion(completion.data)


@pytest.mark.anyio
async def test_groq_drops_what_it_rejects_from_streams_too(
    wire: WireClient, fake_upstream: FakeUpstream
) -> None:
    groq = next(spec for spec in SPECS if spec.name == "groq")
    fake_upstream.reply(sse_reply(chunk_payloads(["a", "b"])))
    provider = provider_for(groq, wire, fake_upstream)

    stream = provider.stream_chat_completions(chat_request(logprobs=True))
    chunks = [c async for arrived in stream for c in arrived]

    assert "logprobs" not in fake_upstream.requests[-1].json
    assert fake_upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    for chunk in chunks:
        assert_chunk(chunk.data)


def test_every_spec_reads_variables_named_after_it() -> None:
    for spec in SPECS:
        assert spec.key_variable == f"{spec.name.upper()}_API_KEY"
        assert spec.base_url_variable == f"{spec.name.upper()}_BASE_URL"


@pytest.mark.anyio
async def test_vendors_are_served_once_configured() -> None:
    environ = {"GROQ_API_KEY": "gk-1234567890", "OLLAMA_BASE_URL": "http://127.0.0.1:1/v1"}

    registry = build_registry(make_settings(cerebras_mock="true"), environ=environ)
    try:
        names = [provider.name for provider in registry]
        groq, _ = registry.resolve("groq/llama-3.3-70b")
    finally:
        await registry.aclose()

    assert names == ["cerebras", "groq", "ollama"]
    assert groq.name == "groq"


@pytest.mark.anyio
async def test_no_vendor_is_served_without_settings() -> None:
    registry = build_registry(make_settings(cerebras_mock="true"))
    try:
        assert [provider.name for provider in registry] == ["cerebras"]
    finally:
        await registry.aclose()


def one_read(events: list[dict[str, Any]]) -> Reply:
    """An event stream sent whole, `[DONE]` included: one read for the gateway."""
    body = b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events)
    return Reply(headers={"Content-Type": "text/event-stream"}, body=body + b"data: [DONE]\n\n")


@pytest.mark.anyio
async def test_a_stream_read_whole_ends_with_a_burst_marked_last(
    wire: WireClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(one_read(chunk_payloads(["a", "b"])))
    provider = provider_for(next(s for s in SPECS if s.name == "groq"), wire, fake_upstream)

    bursts = [burst async for burst in provider.stream_chat_completions(chat_request())]

    assert [len(burst) for burst in bursts] == [1, 5]  # the usage chunk is one of its own
    assert [is_last(burst) for burst in bursts] == [False, True]


@pytest.mark.anyio
async def test_a_last_burst_without_a_finish_is_a_502_after_its_chunks(
    wire: WireClient, fake_upstream: FakeUpstream
) -> None:
    unfinished = [c for c in chunk_payloads(["a", "b"]) if not c["choices"][0].get("finish_reason")]
    fake_upstream.reply(one_read(unfinished))
    provider = provider_for(next(s for s in SPECS if s.name == "groq"), wire, fake_upstream)
    bursts: list[list[Any]] = []

    async def read() -> None:
        async for burst in provider.stream_chat_completions(chat_request()):
            bursts.append(burst)

    with pytest.raises(ProviderError, match="ended before the answer finished"):
        await read()

    assert [len(burst) for burst in bursts] == [1, 3]
    assert not any(is_last(burst) for burst in bursts)
