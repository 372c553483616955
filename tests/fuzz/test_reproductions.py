"""The smallest reproductions of what the fuzz runs found: regression tests for the bugs fixed
at their cause, and, marked `xfail(strict=True)`, the one still open (uvicorn answers a request
its HTTP parser rejects with its own plain-text 400). The fuzz runs still keep clear of the
fixed kinds where they did before (hostile_replies.py, odd_requests.py)."""

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ai_gateway.app import create_app
from tests.conftest import ONE_ATTEMPT
from tests.e2e.conftest import real_mode
from tests.e2e.server import GatewayServer
from tests.fake_upstream import FakeUpstream, Reply, json_reply, sse_reply
from tests.fakes import GATEWAY_KEY, MODEL, UPSTREAM_KEY, chunk_payloads, completion_payload
from tests.fuzz.conftest import GatewayLogs, captured_logs
from tests.fuzz.contract import Exchange, check_exchange, check_stream

CLIENT_TIMEOUT_S = 20.0
BODY = {"model": f"cerebras/{MODEL}", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def logs() -> Iterator[GatewayLogs]:
    """What the gateway logs during the test (a crash must leave no trace there either)."""
    with captured_logs() as captured:
        yield captured


@pytest.fixture(params=["native", "sdk"])
def gateway(request: pytest.FixtureRequest, fake_upstream: FakeUpstream) -> Iterator[GatewayServer]:
    """Cerebras in real mode over each transport against the fake upstream."""
    settings = real_mode(request.param, base_url=fake_upstream.url + "/v1/", timeout=5.0)
    with GatewayServer(create_app(settings, config=ONE_ATTEMPT)) as server:
        yield server


@pytest.fixture
def sdk_gateway(fake_upstream: FakeUpstream) -> Iterator[GatewayServer]:
    """Cerebras in real mode over the official SDK against the fake upstream."""
    settings = real_mode("sdk", base_url=fake_upstream.url + "/v1/", timeout=5.0)
    with GatewayServer(create_app(settings, config=ONE_ATTEMPT)) as server:
        yield server


def chat(gateway: GatewayServer, **extra: Any) -> Exchange:
    """POST /v1/chat/completions with the valid key."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={**BODY, **extra},
        headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
        timeout=CLIENT_TIMEOUT_S,
    )
    return Exchange(
        method="POST",
        url=str(response.url),
        status=response.status_code,
        headers=dict(response.headers),
        body=response.content,
    )


def test_over_the_sdk_a_first_event_that_is_not_utf8_is_a_502(
    sdk_gateway: GatewayServer, fake_upstream: FakeUpstream, logs: GatewayLogs
) -> None:
    fake_upstream.reply(sse_reply([b"data: \x80\n\n"]))

    exchange = chat(sdk_gateway, stream=True)

    assert exchange.status == 502, exchange.describe()
    check_exchange(exchange, upstream_statuses=(502,))
    assert logs.failures() == []


def test_over_the_sdk_a_later_event_that_is_not_utf8_ends_the_stream_with_a_502(
    sdk_gateway: GatewayServer, fake_upstream: FakeUpstream, logs: GatewayLogs
) -> None:
    fake_upstream.reply(sse_reply([*chunk_payloads()[:2], b"data: \x80\n\n"], chunk_delay=0.02))

    exchange = chat(sdk_gateway, stream=True)

    assert exchange.status == 200, exchange.describe()
    events = check_stream(exchange, upstream_statuses=(502,))
    assert events[-1]["status_code"] == 502, exchange.describe()
    assert logs.failures() == []


def test_a_completion_whose_choices_is_a_number_is_a_502(
    gateway: GatewayServer, fake_upstream: FakeUpstream, logs: GatewayLogs
) -> None:
    fake_upstream.reply(json_reply(completion_payload(choices=1)))

    exchange = chat(gateway)

    assert exchange.status == 502, exchange.describe()
    check_exchange(exchange, upstream_statuses=(502,))
    assert logs.failures() == []


def test_a_first_chunk_whose_choices_is_a_number_is_a_502(
    gateway: GatewayServer, fake_upstream: FakeUpstream, logs: GatewayLogs
) -> None:
    fake_upstream.reply(sse_reply([{**chunk_payloads()[0], "choices": 1}]))

    exchange = chat(gateway, stream=True)

    assert exchange.status == 502, exchange.describe()
    check_exchange(exchange, upstream_statuses=(502,))
    assert logs.failures() == []


def with_raw_number(payload: dict[str, Any], path: tuple[str, ...], number: bytes) -> bytes:
    """`payload` as JSON with the field at `path` set to the JSON text `number`."""
    *outer, last = path
    inner = payload = json.loads(json.dumps(payload))
    for name in outer:
        inner = inner[name]
    inner[last] = "NUMBER"
    return json.dumps(payload).encode().replace(b'"NUMBER"', number)


def test_over_the_sdk_a_token_count_of_infinity_is_a_502(
    sdk_gateway: GatewayServer, fake_upstream: FakeUpstream, logs: GatewayLogs
) -> None:
    body = with_raw_number(completion_payload(), ("usage", "prompt_tokens"), b"Infinity")
    fake_upstream.reply(Reply(headers={"Content-Type": "application/json"}, body=body))

    exchange = chat(sdk_gateway)

    assert exchange.status == 502, exchange.describe()
    check_exchange(exchange, upstream_statuses=(502,))
    assert logs.failures() == []


def test_over_the_sdk_a_chunk_created_at_nan_is_no_crash(
    sdk_gateway: GatewayServer, fake_upstream: FakeUpstream, logs: GatewayLogs
) -> None:
    chunk = with_raw_number(chunk_payloads()[0], ("created",), b"NaN").decode()
    fake_upstream.reply(sse_reply([chunk]))

    exchange = chat(sdk_gateway, stream=True)

    # A `created` that is not a finite number is replaced by the current time, as a missing one.
    assert exchange.status == 200, exchange.describe()
    check_exchange(exchange, upstream_statuses=(502,))
    assert logs.failures() == []


@pytest.mark.parametrize(
    ("status", "header"), [(429, "Retry-After"), (503, "retry-after-ms")], ids=["429", "503"]
)
def test_an_upstream_key_in_a_retry_hint_never_reaches_the_caller(
    gateway: GatewayServer, fake_upstream: FakeUpstream, status: int, header: str
) -> None:
    fake_upstream.reply(
        json_reply(
            {"error": {"message": "slow down"}}, status=status, headers={header: UPSTREAM_KEY}
        )
    )

    exchange = chat(gateway)

    assert exchange.status in (429, 502), exchange.describe()
    check_exchange(exchange, secrets=(UPSTREAM_KEY,), upstream_statuses=(502,))


def send_bytes(gateway: GatewayServer, request: bytes) -> bytes:
    """Send `request` as it is; everything received until the gateway closes."""
    received = b""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=CLIENT_TIMEOUT_S) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
    return received


@pytest.mark.xfail(
    strict=True,
    reason="a request the HTTP parser rejects (here a control character in a header value) is "
    "answered by uvicorn's own 400, `text/plain` 'Invalid HTTP request received.', not the "
    "error envelope the gateway's 431 already uses",
)
def test_a_request_the_http_parser_rejects_gets_the_error_envelope(
    fake_upstream: FakeUpstream,
) -> None:
    settings = real_mode("native", base_url=fake_upstream.url + "/v1/", timeout=5.0)
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Odd: a\x01b\r\nConnection: close\r\n\r\n"
    )
    with GatewayServer(create_app(settings, config=ONE_ATTEMPT)) as server:
        received = send_bytes(server, request)

    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    status = int(lines[0].split()[1])
    exchange = Exchange(method="GET", url="/healthz", status=status, headers=headers, body=body)

    assert status == 400, exchange.describe()
    check_exchange(exchange)
