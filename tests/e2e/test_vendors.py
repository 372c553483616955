"""The official openai SDK through a running gateway to two OpenAI-compatible vendors."""

from collections.abc import Iterator

import pytest

from ai_gateway.app import create_app
from tests.conftest import ONE_ATTEMPT, make_settings
from tests.e2e.server import GatewayServer, openai_client
from tests.fake_upstream import FakeUpstream, json_reply, sse_reply
from tests.fakes import chunk_payloads, completion_payload

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def vendor_gateway(fake_upstream_server: FakeUpstream) -> Iterator[GatewayServer]:
    """Groq and OpenAI configured, both pointed at the fake upstream."""
    base_url = f"{fake_upstream_server.url}/v1"
    environ = {
        "GROQ_API_KEY": "gk-groq-test-1234567890",
        "GROQ_BASE_URL": base_url,
        "OPENAI_API_KEY": "sk-openai-test-1234567890",
        "OPENAI_BASE_URL": base_url,
    }
    settings = make_settings(cerebras_mock="true")
    with GatewayServer(create_app(settings, config=ONE_ATTEMPT, environ=environ)) as server:
        yield server


@pytest.mark.parametrize(("vendor", "key"), [("groq", "gk-groq"), ("openai", "sk-openai")])
def test_openai_sdk_reaches_each_vendor_with_that_vendors_key(
    vendor_gateway: GatewayServer, fake_upstream: FakeUpstream, vendor: str, key: str
) -> None:
    fake_upstream.reply(
        json_reply(completion_payload(text=f"hi from {vendor}")),
        sse_reply(chunk_payloads(["x", "y"]), done=False),
    )
    client = openai_client(vendor_gateway)

    completion = client.chat.completions.create(model=f"{vendor}/some-model", messages=MESSAGES)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model=f"{vendor}/some-model",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert completion.choices[0].message.content == f"hi from {vendor}"
    assert streamed == "xy"
    first, second = fake_upstream.requests[-2:]
    assert first.json["model"] == "some-model"
    assert first.headers["authorization"].startswith(f"Bearer {key}")
    assert second.json["stream"] is True
