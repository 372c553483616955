"""The official openai and Cerebras SDKs as clients of a running gateway, over real sockets."""

import re
from typing import Any

import httpx
import openai
import pytest
from cerebras.cloud.sdk import Cerebras

from tests.e2e.server import GatewayServer, openai_client
from tests.fake_upstream import FakeUpstream, json_reply, sse_reply
from tests.fakes import GATEWAY_KEY, MODEL, UPSTREAM_KEY, chunk_payloads, completion_payload
from tests.openai_spec import assert_chunk, assert_completion

MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


def cerebras_client(gateway: GatewayServer) -> Cerebras:
    return Cerebras(
        api_key=GATEWAY_KEY,
        base_url=f"{gateway.url}/cerebras",
        max_retries=0,
        warm_tcp_connection=False,
    )


def test_openai_sdk_gets_a_valid_completion_through_the_unified_route(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply(completion_payload(text="hi from upstream")))

    raw = openai_client(real_gateway).chat.completions.with_raw_response.create(
        model=f"cerebras/{MODEL}", messages=MESSAGES, temperature=0.2
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "hi from upstream"
    assert completion.usage is not None
    assert completion.usage.total_tokens == 5
    assert raw.headers["x-request-id"]
    assert re.fullmatch(
        r"gw;dur=[0-9.]+, upstream;dur=[0-9.]+, ttfb;dur=[0-9.]+", raw.headers["server-timing"]
    )
    assert_completion(raw.http_response.json())
    sent = fake_upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json == {"messages": MESSAGES, "model": MODEL, "temperature": 0.2}
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert GATEWAY_KEY not in str(sent.headers)


def test_openai_sdk_streams_chunks_that_match_the_spec(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(sse_reply(chunk_payloads(["Hel", "lo", "!"]), done=False))

    stream = openai_client(real_gateway).chat.completions.create(
        model=f"cerebras/{MODEL}",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello!"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    for chunk in chunks:
        assert_chunk(chunk.model_dump(exclude_unset=True))


def test_raw_stream_ends_with_done_even_when_upstream_omits_it(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(sse_reply(chunk_payloads(), done=False))
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}

    response = httpx.post(
        f"{real_gateway.url}/cerebras/v1/chat/completions", json=body, headers=headers
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    assert '"usage"' not in response.text  # not asked for: the usage chunk is withheld
    assert re.fullmatch(
        r"gw;dur=[0-9.]+, upstream;dur=[0-9.]+, ttfb;dur=[0-9.]+", response.headers["server-timing"]
    )


def test_cerebras_sdk_is_a_client_of_the_provider_route(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(
        json_reply(completion_payload(text="from cerebras")),
        sse_reply(chunk_payloads(["a", "b"])),
    )
    client = cerebras_client(real_gateway)

    completion: Any = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    stream: Any = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]

    assert completion.choices[0].message.content == "from cerebras"
    assert completion.to_dict()["time_info"]["total_time"] == 0.006
    assert "".join(pieces) == "ab"


def test_upstream_rate_limit_reaches_the_openai_client_with_retry_after(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(
        json_reply(
            {"message": "slow down", "type": "too_many_requests_error", "param": "", "code": ""},
            status=429,
            headers={"retry-after": "3", "retry-after-ms": "3000"},
        )
    )

    with pytest.raises(openai.RateLimitError) as caught:
        openai_client(real_gateway).chat.completions.create(
            model=f"cerebras/{MODEL}", messages=MESSAGES
        )

    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.response.headers["retry-after-ms"] == "3000"
    assert caught.value.body == {
        "message": "slow down",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }


def test_upstream_failures_become_502_for_the_openai_client(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply({"message": "down"}, status=503))

    with pytest.raises(openai.InternalServerError) as caught:
        openai_client(real_gateway).chat.completions.create(
            model=f"cerebras/{MODEL}", messages=MESSAGES
        )

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"


def test_upstream_rejecting_our_key_is_a_502_that_names_no_key(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply({"message": f"bad key {UPSTREAM_KEY}"}, status=401))

    with pytest.raises(openai.InternalServerError) as caught:
        openai_client(real_gateway).chat.completions.create(
            model=f"cerebras/{MODEL}", messages=MESSAGES
        )

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_auth_error"
    assert UPSTREAM_KEY not in caught.value.response.text


def test_upstream_bad_request_keeps_its_status_and_message(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    error = {
        "message": "max_tokens too large",
        "type": "invalid_request_error",
        "param": "max_tokens",
    }
    fake_upstream.reply(json_reply(error, status=400))

    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(real_gateway).chat.completions.create(
            model=f"cerebras/{MODEL}", messages=MESSAGES, max_tokens=10**9
        )

    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "max_tokens too large",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": None,
    }


def test_mid_stream_cut_raises_in_the_openai_client_after_the_first_chunks(
    real_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    # The cut comes a moment after the second chunk: a reset that overtakes unread data would
    # (rightly) lose that data too, and make the test depend on timing.
    cut = [*chunk_payloads(["one", "two", "three"])[:2], b""]
    fake_upstream.reply(sse_reply(cut, done=False, chunk_delay=0.05, drop_after=3))
    stream = openai_client(real_gateway).chat.completions.create(
        model=f"cerebras/{MODEL}", messages=MESSAGES, stream=True
    )
    received: list[str] = []

    def consume() -> None:
        received.extend(chunk.choices[0].delta.content or "" for chunk in stream)

    with pytest.raises(openai.APIError) as caught:
        consume()

    assert received == ["", "one"]
    assert caught.value.body == {
        "message": "cerebras unreachable or the connection dropped",
        "type": "upstream_error",
        "param": None,
        "code": "upstream_error",
    }
