"""Mock mode through a running gateway: deterministic, marked, and valid OpenAI output."""

import httpx

from tests.e2e.server import GatewayServer, openai_client
from tests.fakes import GATEWAY_KEY
from tests.openai_spec import assert_completion

HEADERS = {"Authorization": f"Bearer {GATEWAY_KEY}"}


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

    completion = gateway.chat.completions.create(model="cerebras/any-model", messages=messages)  # type: ignore[arg-type]
    stream = gateway.chat.completions.create(
        model="cerebras/any-model",
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
