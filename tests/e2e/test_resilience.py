"""Timeouts, dropped connections, client disconnects and concurrency over real sockets."""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest

from ai_gateway.app import create_app
from tests.conftest import ONE_ATTEMPT
from tests.e2e.conftest import UPSTREAM_TIMEOUT_S, real_mode
from tests.e2e.server import GatewayServer
from tests.fake_upstream import FakeUpstream, RecordedRequest, Reply, json_reply, sse_reply
from tests.fakes import GATEWAY_KEY, MODEL, chunk_payloads, completion_payload
from tests.openai_spec import assert_error

HEADERS = {"Authorization": f"Bearer {GATEWAY_KEY}"}
SLACK_S = 1.0


def chat(gateway: GatewayServer, **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(
        f"{gateway.url}/cerebras/v1/chat/completions", json=payload, headers=HEADERS, timeout=10
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_hanging_upstream_is_a_bounded_502_timeout(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream, stream: bool
) -> None:
    fake_upstream.reply(Reply(hang=True))
    started = time.monotonic()

    response = chat(real_gateway, stream=stream)

    elapsed = time.monotonic() - started
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert_error(response.json())
    assert UPSTREAM_TIMEOUT_S * 0.9 <= elapsed < UPSTREAM_TIMEOUT_S + SLACK_S


def test_a_stream_whose_first_chunk_never_comes_times_out_before_the_200(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(sse_reply(chunk_payloads(), chunk_delay=UPSTREAM_TIMEOUT_S * 3))
    started = time.monotonic()

    response = chat(real_gateway, stream=True)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < UPSTREAM_TIMEOUT_S + SLACK_S


def test_the_timeout_covers_headers_and_first_chunk_together(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    slow = sse_reply(chunk_payloads(), chunk_delay=UPSTREAM_TIMEOUT_S * 0.6)
    fake_upstream.reply(replace(slow, delay=UPSTREAM_TIMEOUT_S * 0.6))
    started = time.monotonic()

    response = chat(real_gateway, stream=True)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < UPSTREAM_TIMEOUT_S + SLACK_S / 2


@pytest.mark.parametrize(
    "reply",
    [
        Reply(drop_after=0),
        Reply(status=200, headers={"content-type": "application/json"}, body=b'{"id": '),
        Reply(status=200, headers={"content-type": "text/html"}, body=b"<html>oops</html>"),
        json_reply({"unexpected": True}),
    ],
    ids=["dropped", "malformed-json", "html", "not-a-completion"],
)
def test_broken_upstream_replies_are_502_and_the_gateway_keeps_serving(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream, reply: Reply
) -> None:
    fake_upstream.reply(reply, json_reply(completion_payload(text="still here")))

    broken = chat(real_gateway)
    healthy = chat(real_gateway)

    assert broken.status_code == 502
    assert broken.json()["error"]["type"] == "upstream_error"
    assert_error(broken.json())
    assert healthy.json()["choices"][0]["message"]["content"] == "still here"


def test_a_client_that_disconnects_mid_stream_closes_the_upstream_stream(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(sse_reply(chunk_payloads(["x"] * 40), chunk_delay=0.1))
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}

    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST",
            f"{real_gateway.url}/cerebras/v1/chat/completions",
            json=payload,
            headers=HEADERS,
        ) as response,
    ):
        first = next(response.iter_lines())
        assert first.startswith("data: ")

    assert fake_upstream.wait_for_disconnects(1, timeout=3.0)
    fake_upstream.reply(json_reply(completion_payload(text="next")))
    assert chat(real_gateway).json()["choices"][0]["message"]["content"] == "next"


def echo_reply(request: RecordedRequest) -> Reply:
    said = request.json["messages"][-1]["content"]
    return json_reply(completion_payload(text=f"echo {said}"), delay=0.01)


@pytest.fixture(params=["native", "sdk"])
def patient_gateway(
    fake_upstream: FakeUpstream, request: pytest.FixtureRequest
) -> Iterator[GatewayServer]:
    """Real mode with a generous timeout: under load, this one process also runs the clients."""
    settings = real_mode(request.param, base_url=fake_upstream.url, timeout=30)
    with GatewayServer(create_app(settings, config=ONE_ATTEMPT)) as server:
        yield server


@pytest.mark.anyio
async def test_concurrent_requests_each_get_their_own_answer(
    patient_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply_with(echo_reply)
    limits = httpx.Limits(max_connections=150)

    async with httpx.AsyncClient(headers=HEADERS, timeout=30, limits=limits) as http:

        async def ask(n: int) -> str:
            body = {
                "model": f"cerebras/{MODEL}",
                "messages": [{"role": "user", "content": f"#{n}"}],
            }
            response = await http.post(f"{patient_gateway.url}/v1/chat/completions", json=body)
            content: str = response.json()["choices"][0]["message"]["content"]
            return content

        answers = await asyncio.gather(*(ask(n) for n in range(120)))

    assert answers == [f"echo #{n}" for n in range(120)]


def test_models_are_fetched_from_upstream_once_and_cached(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    listing = {
        "object": "list",
        "data": [{"id": "gpt-oss-120b", "object": "model", "created": 1, "owned_by": "Cerebras"}],
    }
    fake_upstream.reply(json_reply(listing))
    client = openai.OpenAI(base_url=f"{real_gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)

    unified = [m.id for m in client.models.list()]
    bare = httpx.get(f"{real_gateway.url}/cerebras/v1/models", headers=HEADERS).json()

    assert unified == ["cerebras/gpt-oss-120b"]
    assert bare == {"object": "list", "data": listing["data"]}
    assert [r.path for r in fake_upstream.requests] == ["/v1/models"]
