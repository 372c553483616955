"""Header limits over real sockets: an oversized header block gets a 431 at once, a slow one is
closed after the header timeout, and normal clients notice neither."""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import BinaryIO

import httpx
import orjson
import pytest

from ai_gateway.app import create_app
from ai_gateway.config import constants
from tests.conftest import ONE_ATTEMPT, make_settings
from tests.e2e.conftest import real_mode
from tests.e2e.server import GatewayServer
from tests.fake_upstream import FakeUpstream, json_reply
from tests.fakes import GATEWAY_KEY, MODEL, completion_payload

MAX_HEADER_BYTES = constants.DEFAULT_MAX_HEADER_BYTES
HEADER_TIMEOUT_S = 1.0
SLACK_S = 1.0
HEALTH_LATENCY_S = 0.5  # a stalled event loop shows up as seconds
PROBE_INTERVAL_S = 0.02
TRICKLE_INTERVAL_S = 0.1
SLOWLORIS_CONNECTIONS = 300
TRICKLED = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
TOO_LARGE_ENVELOPE = {
    "error": {
        "message": f"The request line and headers are over the limit of {MAX_HEADER_BYTES} bytes.",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_header_fields_too_large",
    }
}


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP response as read off a socket."""

    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayServer]:
    """Mock mode with the default header size limit and a short header timeout."""
    settings = make_settings(cerebras_mock="true", header_timeout_s=HEADER_TIMEOUT_S)
    with GatewayServer(create_app(settings, config=ONE_ATTEMPT), settings=settings) as server:
        yield server


@pytest.fixture(scope="module")
def slow_gateway(fake_upstream_server: FakeUpstream) -> Iterator[GatewayServer]:
    """Real mode against the fake upstream, so an answer can be kept in progress."""
    settings = real_mode("native", base_url=fake_upstream_server.url + "/v1/", timeout=10)
    settings = settings.model_copy(update={"header_timeout_s": HEADER_TIMEOUT_S})
    with GatewayServer(create_app(settings, config=ONE_ATTEMPT), settings=settings) as server:
        yield server


def request_head(
    size: int, *, method: str = "GET", path: str = "/healthz", extra: str = ""
) -> bytes:
    """A request line and headers (through the blank line) of exactly `size` bytes."""
    start = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}X-Pad: ".encode()
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def chat_request(*, head_size: int = 1024, content: str = "hi") -> bytes:
    """A whole chat completion request whose header block is `head_size` bytes."""
    body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": content}]})
    extra = (
        f"Authorization: Bearer {GATEWAY_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    path = "/cerebras/v1/chat/completions"
    return request_head(head_size, method="POST", path=path, extra=extra) + body


def read_answer(stream: BinaryIO) -> Answer:
    """Read one response with a Content-Length body."""
    status_line = stream.readline()
    assert status_line, "the connection closed without an answer"
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, stream.read(int(headers["content-length"])))


@contextmanager
def connected(gateway: GatewayServer) -> Iterator[tuple[socket.socket, BinaryIO]]:
    """A raw connection to the gateway and a buffered reader of it."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        yield sock, sock.makefile("rb")


def send_ignoring_close(sock: socket.socket, data: bytes) -> None:
    """Send everything, or as much as the gateway reads before it closes the connection."""
    with suppress(OSError):
        sock.sendall(data)


@contextmanager
def probing_health(gateway: GatewayServer) -> Iterator[list[float]]:
    """A client in a thread calling GET /healthz, each time on a new connection, until the block
    ends; yields each call's latency (infinite for a failure)."""
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=gateway.url, timeout=5, limits=limits) as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    ok = http.get(constants.HEALTH_PATH).status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.monotonic() - started if ok else float("inf"))
                stop.wait(PROBE_INTERVAL_S)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        wait_for_calls(latencies, 5)  # the client is up before the attack starts
        yield latencies
    finally:
        stop.set()
        thread.join(timeout=15)


def wait_for_calls(latencies: list[float], count: int) -> None:
    """Wait (up to 5 s) until the health client has made `count` more calls."""
    target = len(latencies) + count
    deadline = time.monotonic() + 5
    while len(latencies) < target and time.monotonic() < deadline:
        time.sleep(0.01)


def wait_for_no_connections(gateway: GatewayServer, *, timeout: float) -> float:
    """Seconds until the gateway holds no connection (at most `timeout`)."""
    started = time.monotonic()
    while gateway.connection_count and time.monotonic() - started < timeout:
        time.sleep(0.01)
    return time.monotonic() - started


def trickle(sock: socket.socket, data: bytes, *, give_up_after: float) -> float | None:
    """Send `data` a byte per TRICKLE_INTERVAL_S until the gateway closes the connection: seconds
    it took, or None if it never did."""
    started = time.monotonic()
    sock.settimeout(TRICKLE_INTERVAL_S)
    for byte in data:
        if time.monotonic() - started > give_up_after:
            return None
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(1) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:  # reset: closed with our bytes unread
            return time.monotonic() - started
    return None


def test_a_50_mb_header_gets_a_431_envelope_at_once_while_health_answers(
    gateway: GatewayServer,
) -> None:
    head = request_head(50 * 1024 * 1024)
    with probing_health(gateway) as latencies, connected(gateway) as (sock, stream):
        sender = threading.Thread(target=send_ignoring_close, args=(sock, head), daemon=True)
        started = time.monotonic()
        sender.start()
        answer = read_answer(stream)
        answered_after = time.monotonic() - started
        is_closed = stream.read(1) == b""
        sender.join(timeout=10)
        sent_after = time.monotonic() - started
        wait_for_calls(latencies, 5)

    assert answer.status == 431
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["connection"] == "close"
    assert orjson.loads(answer.body) == TOO_LARGE_ENVELOPE
    assert answered_after < 0.5
    assert is_closed
    assert sent_after < HEADER_TIMEOUT_S + SLACK_S
    assert len(latencies) >= 10
    assert max(latencies) < HEALTH_LATENCY_S


def test_a_rejected_client_that_keeps_its_socket_open_is_closed_after_the_header_timeout(
    gateway: GatewayServer,
) -> None:
    wait_for_no_connections(gateway, timeout=HEADER_TIMEOUT_S + SLACK_S)
    with connected(gateway) as (sock, stream):
        sock.sendall(request_head(MAX_HEADER_BYTES + 1))
        answer = read_answer(stream)
        closed_after = wait_for_no_connections(gateway, timeout=HEADER_TIMEOUT_S + SLACK_S)

    assert answer.status == 431
    assert closed_after < HEADER_TIMEOUT_S + SLACK_S


@pytest.mark.parametrize(("size", "status"), [(MAX_HEADER_BYTES, 200), (MAX_HEADER_BYTES + 1, 431)])
def test_a_header_block_at_the_limit_is_served_and_one_byte_more_is_not(
    gateway: GatewayServer, size: int, status: int
) -> None:
    with connected(gateway) as (sock, stream):
        sock.sendall(request_head(size))
        answer = read_answer(stream)

    assert answer.status == status


def test_a_body_sent_along_with_a_header_block_at_the_limit_is_not_counted_as_header(
    gateway: GatewayServer,
) -> None:
    content = "word " * 60_000  # 300 kB, arriving in the same reads as the headers
    with connected(gateway) as (sock, stream):
        sock.sendall(chat_request(head_size=MAX_HEADER_BYTES, content=content))
        answer = read_answer(stream)

    assert answer.status == 200
    assert orjson.loads(answer.body)["choices"][0]["message"]["content"].endswith("word")


def test_a_keep_alive_client_is_served_request_after_request(gateway: GatewayServer) -> None:
    statuses = []
    with connected(gateway) as (sock, stream):
        for _ in range(5):
            sock.sendall(request_head(1024))
            statuses.append(read_answer(stream).status)
        sock.sendall(request_head(1024) + chat_request() + request_head(MAX_HEADER_BYTES))
        statuses += [read_answer(stream).status for _ in range(3)]
        time.sleep(HEADER_TIMEOUT_S + 0.5)  # idle, not slow: uvicorn's keep-alive (5 s) applies
        sock.sendall(request_head(1024))
        statuses.append(read_answer(stream).status)

    assert statuses == [200] * 9


def test_a_next_request_that_trickles_in_is_closed_after_the_header_timeout(
    gateway: GatewayServer,
) -> None:
    with connected(gateway) as (sock, stream):
        sock.sendall(request_head(1024))
        answer = read_answer(stream)
        closed_after = trickle(sock, TRICKLED, give_up_after=HEADER_TIMEOUT_S + SLACK_S)

    assert answer.status == 200
    assert closed_after is not None
    assert HEADER_TIMEOUT_S * 0.9 < closed_after < HEADER_TIMEOUT_S + SLACK_S


async def hold_open(port: int, *, sent_at_once: int, is_silent: bool) -> float | None:
    """Open a connection, send TRICKLED's first `sent_at_once` bytes, then the rest a byte per
    TRICKLE_INTERVAL_S (or nothing if silent) until the gateway closes it: seconds it stayed
    open, or None if it answered or was still open after HEADER_TIMEOUT_S + SLACK_S."""
    loop = asyncio.get_running_loop()
    started = loop.time()  # before connecting: the gateway's clock cannot start earlier
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    closed = asyncio.ensure_future(reader.read(1))
    try:
        writer.write(TRICKLED[:sent_at_once])
        for index in range(sent_at_once, len(TRICKLED)):
            if loop.time() - started > HEADER_TIMEOUT_S + SLACK_S:
                break
            if not is_silent:
                writer.write(TRICKLED[index : index + 1])
            done, _ = await asyncio.wait({closed}, timeout=TRICKLE_INTERVAL_S)
            if done:
                is_closed = closed.exception() is not None or closed.result() == b""
                return loop.time() - started if is_closed else None
        return None
    finally:
        closed.cancel()
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


@pytest.mark.anyio
async def test_slowloris_connections_are_closed_after_the_header_timeout_while_health_answers(
    gateway: GatewayServer,
) -> None:
    kinds = [
        (0, True),  # connects and says nothing
        (0, False),  # the request line, a byte at a time
        (40, False),  # a header, a byte at a time
    ]
    openings = [kinds[index % len(kinds)] for index in range(SLOWLORIS_CONNECTIONS)]
    with probing_health(gateway) as latencies:
        async with asyncio.timeout(15):
            held = await asyncio.gather(
                *(
                    hold_open(gateway.port, sent_at_once=sent_at_once, is_silent=is_silent)
                    for sent_at_once, is_silent in openings
                )
            )

    assert None not in held
    closed_after = [seconds for seconds in held if seconds is not None]
    assert min(closed_after) > HEADER_TIMEOUT_S * 0.9
    assert max(closed_after) < HEADER_TIMEOUT_S + SLACK_S
    assert len(latencies) >= 10
    assert max(latencies) < HEALTH_LATENCY_S


def test_an_oversized_header_pipelined_behind_an_answer_ends_the_connection_after_it(
    slow_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply(completion_payload(), delay=0.5))
    with connected(slow_gateway) as (sock, stream):
        sock.sendall(chat_request() + request_head(4 * MAX_HEADER_BYTES))
        answer = read_answer(stream)
        is_closed = stream.read(1) == b""

    assert answer.status == 200
    assert is_closed


def test_a_header_block_overdue_behind_an_answer_lets_that_answer_finish(
    slow_gateway: GatewayServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reply(json_reply(completion_payload(), delay=HEADER_TIMEOUT_S + 0.5))
    with connected(slow_gateway) as (sock, stream):
        sock.sendall(chat_request())
        time.sleep(0.1)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request, never finished
        answer = read_answer(stream)
        is_closed = stream.read(1) == b""

    assert answer.status == 200
    assert is_closed


def test_server_timing_counts_from_the_first_byte_of_the_header_block(
    gateway: GatewayServer,
) -> None:
    with connected(gateway) as (sock, stream):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.3)  # the rest of the header block comes later
        sock.sendall(b"X-Late: 1\r\n\r\n")
        slow = read_answer(stream)
        time.sleep(0.3)  # idle on a kept-alive connection
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        quick = read_answer(stream)

    timings = [
        dict(part.strip().split(";dur=") for part in answer.headers["server-timing"].split(","))
        for answer in (slow, quick)
    ]
    assert float(timings[0]["ttfb"]) >= 300
    assert float(timings[1]["ttfb"]) < 300  # the idle time before it is not counted
