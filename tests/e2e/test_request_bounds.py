"""The caller's limits over real sockets: REQUEST_TIMEOUT_S bounds the whole request, a caller
who leaves stops the work, and callers who stop reading streams cannot starve the others."""

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from ai_gateway.app import create_app
from ai_gateway.config.file import GatewayConfig
from tests.e2e.conftest import real_mode
from tests.e2e.server import GatewayServer
from tests.fake_upstream import FakeUpstream, Reply, json_reply, sse_reply
from tests.fakes import GATEWAY_KEY, MODEL, chunk_payloads, completion_payload

HEADERS = {"Authorization": f"Bearer {GATEWAY_KEY}"}
TIMEOUT_S = 1.0
SLACK_S = 0.6


@pytest.fixture(params=["native", "sdk"])
def retrying_gateway(
    fake_upstream: FakeUpstream, request: pytest.FixtureRequest
) -> Iterator[GatewayServer]:
    """A gateway with the default routing policy (two retries) and REQUEST_TIMEOUT_S = 1 s."""
    settings = real_mode(request.param, base_url=fake_upstream.url, timeout=TIMEOUT_S)
    with GatewayServer(create_app(settings, config=GatewayConfig())) as server:
        yield server


def chat(gateway: GatewayServer, *, timeout: float = 10, **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(
        f"{gateway.url}/cerebras/v1/chat/completions",
        json=payload,
        headers=HEADERS,
        timeout=timeout,
    )


@pytest.mark.parametrize("stream", [False, True])
def test_the_request_timeout_bounds_the_whole_request_retries_included(
    retrying_gateway: GatewayServer, fake_upstream: FakeUpstream, stream: bool
) -> None:
    fake_upstream.reply(Reply(hang=True), Reply(hang=True), Reply(hang=True))
    started = time.monotonic()

    response = chat(retrying_gateway, stream=stream)

    elapsed = time.monotonic() - started
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + SLACK_S


def test_fast_failures_are_still_retried_within_the_request_timeout(
    retrying_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    failure = json_reply({"error": {"message": "boom"}}, status=500)
    fake_upstream.reply(failure, json_reply(completion_payload(text="third time")))

    response = chat(retrying_gateway)

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "third time"
    assert len(fake_upstream.requests) == 2


@pytest.mark.parametrize("content_bytes", [2, 300_000])  # 300 KB: uvicorn pauses reading
@pytest.mark.parametrize("stream", [False, True])
def test_a_caller_who_leaves_stops_the_upstream_work(
    retrying_gateway: GatewayServer, fake_upstream: FakeUpstream, stream: bool, content_bytes: int
) -> None:
    fake_upstream.reply(Reply(hang=True), Reply(hang=True), Reply(hang=True))
    messages = [{"role": "user", "content": "x" * content_bytes}]

    with pytest.raises(httpx.ReadTimeout):
        chat(retrying_gateway, timeout=0.3, stream=stream, messages=messages)

    assert fake_upstream.wait_for_disconnects(1, timeout=2.0)
    time.sleep(TIMEOUT_S + SLACK_S)  # long enough for any retry to have been made
    assert len(fake_upstream.requests) == 1


def open_unread_stream(gateway: GatewayServer) -> socket.socket:
    """A raw connection that asks for a stream and never reads a byte of the answer."""
    host, port = gateway.url.removeprefix("http://").split(":")
    body = orjson.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    head = (
        f"POST /cerebras/v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {GATEWAY_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    conn = socket.create_connection((host, int(port)))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.sendall(head.encode() + body)
    return conn


def test_a_client_that_stops_reading_a_stream_releases_its_upstream_after_the_send_timeout(
    fake_upstream: FakeUpstream,
) -> None:
    settings = real_mode("native", base_url=fake_upstream.url, timeout=5.0).model_copy(
        update={"stream_send_timeout_s": 0.5}
    )
    big = ["x" * 65536] * 400  # far more than socket buffers and the read-ahead queue hold
    fake_upstream.reply(sse_reply(chunk_payloads(big)))
    with GatewayServer(create_app(settings, config=GatewayConfig())) as gateway:
        conn = open_unread_stream(gateway)
        try:
            assert fake_upstream.wait_for_requests(1)
            assert fake_upstream.wait_for_disconnects(1, timeout=8.0)
        finally:
            conn.close()


def test_other_callers_are_served_while_600_streams_are_left_unread(
    fake_upstream: FakeUpstream,
) -> None:
    settings = real_mode("native", base_url=fake_upstream.url, timeout=5.0)
    slow = sse_reply(chunk_payloads(["x"] * 30), chunk_delay=1.0)  # 30 s if read to the end
    quick = json_reply(completion_payload(text="served"))
    fake_upstream.reply_with(lambda request: quick if not request.json.get("stream") else slow)
    with GatewayServer(create_app(settings, config=GatewayConfig())) as gateway:
        stalled = [open_unread_stream(gateway) for _ in range(600)]
        try:
            assert fake_upstream.wait_for_requests(600, timeout=20.0)
            for _ in range(5):
                started = time.monotonic()
                response = chat(gateway, timeout=5.0)
                assert response.status_code == 200, response.text
                assert response.json()["choices"][0]["message"]["content"] == "served"
                assert time.monotonic() - started < 2.0
        finally:
            for conn in stalled:
                conn.close()
