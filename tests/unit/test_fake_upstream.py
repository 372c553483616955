"""Quick checks of the fake upstream server used by the other tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fake_upstream import (
    FakeUpstream,
    RecordedRequest,
    Reply,
    gzip_reply,
    json_reply,
    sse_reply,
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """A started fake upstream shared by this module."""
    server = FakeUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake(upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The shared fake upstream, reset before and after each test."""
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture
def client(fake: FakeUpstream) -> Iterator[httpx.Client]:
    """An httpx client pointed at the fake upstream."""
    with httpx.Client(base_url=fake.url, timeout=2.0) as http_client:
        yield http_client


def test_json_reply_and_recorded_request(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.reply(json_reply({"ok": True}, status=201, headers={"X-Trace": "abc"}))

    response = client.post(
        "/v1/chat/completions?x=1", json={"model": "m"}, headers={"Authorization": "Bearer k"}
    )

    assert response.status_code == 201
    assert response.json() == {"ok": True}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-trace"] == "abc"
    (request,) = fake.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions?x=1"
    assert request.headers["authorization"] == "Bearer k"
    assert request.json == {"model": "m"}


def test_fifo_order_on_one_keep_alive_connection(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.reply(json_reply(1), json_reply(2), json_reply(3))

    assert [client.get(f"/{i}").json() for i in range(3)] == [1, 2, 3]
    assert [r.path for r in fake.requests] == ["/0", "/1", "/2"]


def test_reply_with_echo_and_chunked_request_body(fake: FakeUpstream, client: httpx.Client) -> None:
    def echo(request: RecordedRequest) -> Reply:
        return json_reply({"path": request.path, "body": request.body.decode()})

    fake.reply_with(echo)

    assert client.post("/a", content=b"plain").json() == {"path": "/a", "body": "plain"}
    chunked = client.post("/b", content=iter([b"ab", b"cd"]))
    assert chunked.json() == {"path": "/b", "body": "abcd"}
    assert fake.requests[1].headers["transfer-encoding"] == "chunked"


def test_sse_reply_arrives_in_chunks(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.reply(sse_reply([{"n": 1}, "two"], chunk_delay=0.05))

    started = time.monotonic()
    with client.stream("POST", "/stream", json={}) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
        pieces = [(time.monotonic() - started, piece) for piece in response.iter_raw()]

    assert [piece for _, piece in pieces] == [
        b'data: {"n": 1}\n\n',
        b"data: two\n\n",
        b"data: [DONE]\n\n",
    ]
    assert pieces[-1][0] - pieces[0][0] >= 0.08


def test_drop_after_breaks_the_stream(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.reply(sse_reply([{"n": 1}, {"n": 2}], drop_after=1))

    received: list[bytes] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("GET", "/stream") as response,
    ):
        received.extend(response.iter_raw())
    assert received == [b'data: {"n": 1}\n\n']


def test_drop_without_any_bytes(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.reply(Reply(drop_after=0))

    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/drop")


def test_hang_and_client_timeout_counts_a_disconnect(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    fake.reply(Reply(hang=True))

    with pytest.raises(httpx.ReadTimeout):
        client.get("/hang", timeout=0.2)

    assert fake.wait_for_disconnects(1, timeout=2.0)
    assert fake.disconnects == 1


def test_client_closing_mid_stream_counts_a_disconnect(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    fake.reply(sse_reply([{"n": i} for i in range(20)], chunk_delay=0.05))

    with client.stream("GET", "/stream") as response:
        first = next(response.iter_raw())
    assert first == b'data: {"n": 0}\n\n'

    assert fake.wait_for_disconnects(1, timeout=2.0)


def test_unscripted_request_gets_599(fake: FakeUpstream, client: httpx.Client) -> None:
    response = client.get("/nothing")

    assert response.status_code == 599
    assert response.json() == {"error": {"message": "fake upstream: no scripted reply"}}
    assert len(fake.requests) == 1


@pytest.mark.parametrize("is_chunked", [False, True])
def test_gzip_reply_inflates_to_its_pieces(
    fake: FakeUpstream, client: httpx.Client, is_chunked: bool
) -> None:
    pieces = [b"x" * 40_000, b"y" * 40_000]
    fake.reply(gzip_reply(pieces, content_type="text/plain", is_chunked=is_chunked))

    response = client.get("/gzip")

    assert response.headers["content-encoding"] == "gzip"
    assert ("transfer-encoding" in response.headers) is is_chunked
    assert response.content == b"".join(pieces)


def test_a_declared_length_over_the_body_holds_the_connection(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    fake.reply(Reply(body=b"{}", content_length=10**9))

    with client.stream("GET", "/big", timeout=0.2) as response:
        assert response.headers["content-length"] == str(10**9)
        with pytest.raises(httpx.ReadTimeout):
            response.read()

    assert fake.wait_for_disconnects(1, timeout=2.0)
