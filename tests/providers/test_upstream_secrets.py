"""Upstream keys never leave in an error, over both transports and real HTTP: every string field
(message, code, param), every path (an HTTP error status, an error body in a 200, an error event
mid-stream), the exact keys of every configured vendor as well as the key shapes."""

from typing import Any

import pytest

from ai_gateway.errors import GatewayError
from ai_gateway.providers.cerebras_client import CerebrasClient
from ai_gateway.providers.protocol import UpstreamAPI
from ai_gateway.providers.registry import build_registry
from ai_gateway.providers.wire import OpenAIWire, WireClient
from ai_gateway.redaction import Redactor
from tests.conftest import make_settings
from tests.fake_upstream import FakeUpstream, json_reply, sse_reply
from tests.fakes import MODEL, UPSTREAM_KEY, chat_request, chunk_payloads
from tests.providers.conftest import UpstreamFactory
from tests.streams import drain

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]
# Another vendor's key, of no known shape: only the list of configured keys can catch it.
OTHER_VENDOR_KEY = "Plain0Vendor1Key2Without3Prefix"
GROQ_SHAPED_KEY = "gsk_" + "a1B2" * 13  # configured nowhere: caught by its shape
KEYS = pytest.mark.parametrize("key", [OTHER_VENDOR_KEY, GROQ_SHAPED_KEY], ids=["other", "shape"])
FIELDS = pytest.mark.parametrize("field", ["message", "code", "param"])


def error_body(field: str, key: str, **extra: Any) -> dict[str, Any]:
    """An upstream error whose `field` holds `key`."""
    error = {"message": "rejected", "code": "some_code", "param": "some_param"}
    return {"error": {**error, field: f"key {key} here"}, **extra}


def assert_redacted(error: GatewayError, field: str, key: str) -> None:
    """No trace of `key` in the error, and `field` says where it was."""
    envelope = error.envelope()
    assert key not in str(envelope)
    assert key not in str(error)
    if envelope["error"][field] is not None:  # a rate limit names no parameter
        assert envelope["error"][field] == "key [redacted] here"


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 404, 409, 413, 422, 429])
@FIELDS
@KEYS
async def test_an_upstream_error_status_never_returns_a_key(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream, status: int, field: str, key: str
) -> None:
    client = make_upstream(fake_upstream.url, redactor=Redactor([OTHER_VENDOR_KEY]))
    fake_upstream.reply(json_reply(error_body(field, key), status=status))

    with pytest.raises(GatewayError) as info:
        await client.chat(MODEL, MESSAGES)

    assert info.value.status_code == status
    assert_redacted(info.value, field, key)


@pytest.mark.anyio
@FIELDS
@KEYS
async def test_an_error_body_in_a_200_never_returns_a_key(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream, field: str, key: str
) -> None:
    client = make_upstream(fake_upstream.url, redactor=Redactor([OTHER_VENDOR_KEY]))
    fake_upstream.reply(json_reply(error_body(field, key, status_code=400)))

    with pytest.raises(GatewayError) as info:
        await client.chat(MODEL, MESSAGES)

    assert info.value.status_code == 400
    assert_redacted(info.value, field, key)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 429])
@FIELDS
@KEYS
async def test_an_error_event_mid_stream_never_returns_a_key(
    make_upstream: UpstreamFactory, fake_upstream: FakeUpstream, status: int, field: str, key: str
) -> None:
    chunks = chunk_payloads()
    fake_upstream.reply(sse_reply([chunks[0], error_body(field, key, status_code=status)]))
    client = make_upstream(fake_upstream.url, redactor=Redactor([OTHER_VENDOR_KEY]))
    received: list[dict[str, Any]] = []

    with pytest.raises(GatewayError) as info:
        await drain(client.stream_chat(MODEL, MESSAGES), received)

    assert received == chunks[:1]
    assert info.value.status_code == status
    assert_redacted(info.value, field, key)


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["native", "sdk"])
async def test_each_client_redacts_its_own_key_without_being_told(
    fake_upstream: FakeUpstream, transport: str
) -> None:
    wire = WireClient(timeout=2.0)
    client: UpstreamAPI = (
        CerebrasClient(OTHER_VENDOR_KEY, base_url=fake_upstream.url, timeout=2.0)
        if transport == "sdk"
        else OpenAIWire(
            wire, provider="groq", base_url=f"{fake_upstream.url}/v1", api_key=OTHER_VENDOR_KEY
        )
    )
    fake_upstream.reply(json_reply(error_body("message", OTHER_VENDOR_KEY), status=400))
    try:
        with pytest.raises(GatewayError) as info:
            await client.chat(MODEL, MESSAGES)
    finally:
        await client.aclose()
        await wire.aclose()

    assert_redacted(info.value, "message", OTHER_VENDOR_KEY)


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["native", "sdk"])
@pytest.mark.parametrize("provider", ["cerebras", "openai"])
async def test_the_registry_gives_every_client_every_configured_key(
    fake_upstream: FakeUpstream, transport: str, provider: str
) -> None:
    settings = make_settings(
        cerebras_api_key=UPSTREAM_KEY,
        cerebras_base_url=fake_upstream.url,
        cerebras_client=transport,
    )
    environ = {
        "GROQ_API_KEY": OTHER_VENDOR_KEY,
        "OPENAI_API_KEY": "openai0key1without2shape",
        "OPENAI_BASE_URL": f"{fake_upstream.url}/v1",
    }
    # One vendor's upstream echoes another vendor's key (a shared proxy, a misrouted call).
    fake_upstream.reply(json_reply(error_body("code", OTHER_VENDOR_KEY), status=400))
    registry = build_registry(settings, environ=environ)
    try:
        with pytest.raises(GatewayError) as info:
            await registry.provider(provider).chat_completions(chat_request())
    finally:
        await registry.aclose()

    assert_redacted(info.value, "code", OTHER_VENDOR_KEY)
