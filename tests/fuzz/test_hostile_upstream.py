"""A hostile upstream: whatever it sends back (see hostile_replies.py), the caller gets a clean
answer: a 4xx or 502 envelope, or, once a stream has started, the 200 stream ending in one
error event and `[DONE]`; never a 500 and never a key, and a redirect is never followed.

Each kind of hostile reply is its own test, over both Cerebras transports and an
OpenAI-compatible vendor (each with its own key configured); hypothesis perturbs the reply
(sizes, statuses, content types, where the key goes, where the stream breaks). The replies
that still make the gateway fail are left out here and reproduced in test_reproductions.py.
"""

import contextlib
import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai_gateway.app import create_app
from tests.conftest import ONE_ATTEMPT
from tests.e2e.conftest import real_mode
from tests.e2e.server import GatewayServer
from tests.fake_upstream import FakeUpstream, json_reply, sse_reply
from tests.fakes import GATEWAY_KEY, UPSTREAM_KEY, chunk_payloads, completion_payload
from tests.fuzz.conftest import GatewayLogs
from tests.fuzz.contract import Exchange, check_exchange, check_stream
from tests.fuzz.hostile_replies import (
    HOSTILE,
    MAX_EVENT_BYTES,
    MAX_RESPONSE_BYTES,
    TARGETS,
    VENDOR,
    VENDOR_KEY,
    Hostile,
    Target,
)
from tests.fuzz.runs import fuzz_settings

UPSTREAM_TIMEOUT_S = 5.0
CLIENT_TIMEOUT_S = 20.0
SECRETS = (UPSTREAM_KEY, VENDOR_KEY, GATEWAY_KEY)
# What an upstream may make the gateway answer: its own failure is a 502, nothing else 5xx.
UPSTREAM_STATUSES = (502,)
TRANSPORTS = ("native", "sdk")


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[FakeUpstream]:
    """A second upstream, on another port, that redirects point to: it must see nothing."""
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gateways(
    fake_upstream_server: FakeUpstream, gateway_logs: GatewayLogs
) -> Iterator[dict[str, GatewayServer]]:
    """A gateway per Cerebras transport, each with one OpenAI-compatible vendor too, all served
    by the fake upstream, with small reply limits so that going over them is cheap."""
    base_url = fake_upstream_server.url + "/v1"
    environ = {f"{VENDOR.upper()}_API_KEY": VENDOR_KEY, f"{VENDOR.upper()}_BASE_URL": base_url}
    limits = {
        "max_upstream_response_bytes": MAX_RESPONSE_BYTES,
        "max_upstream_event_bytes": MAX_EVENT_BYTES,
    }
    with contextlib.ExitStack() as stack:
        servers = {}
        for transport in TRANSPORTS:
            settings = real_mode(transport, base_url=base_url + "/", timeout=UPSTREAM_TIMEOUT_S)
            app = create_app(
                settings.model_copy(update=limits), config=ONE_ATTEMPT, environ=environ
            )
            servers[transport] = stack.enter_context(GatewayServer(app))
        yield servers


def ask(gateway: GatewayServer, target: Target, *, is_stream: bool) -> Exchange:
    """One chat request to `target` through the gateway."""
    body = {
        "model": target.model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": is_stream,
    }
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
        timeout=CLIENT_TIMEOUT_S,
    )
    return Exchange(
        method="POST",
        url=str(response.url),
        status=response.status_code,
        headers=dict(response.headers),
        body=response.content,
        sent=json.dumps(body),
    )


def check_outcome(exchange: Exchange, outcome: str) -> None:
    """The answer `outcome` names (on top of the contract, checked before)."""
    where = exchange.describe()
    if outcome == "broken stream or refused":
        outcome = "broken stream" if exchange.status == 200 else "refused"
    if outcome == "refused":
        assert exchange.status >= 400, where
    elif outcome == "broken stream":
        assert exchange.status == 200, where
        events = check_stream(exchange, upstream_statuses=UPSTREAM_STATUSES)
        assert "error" in events[-1], where
        assert any("choices" in event for event in events), where


CASES = [
    pytest.param(transport, hostile, id=f"{transport}-{hostile.name}")
    for transport in TRANSPORTS
    for hostile in HOSTILE
    if transport in hostile.transports
]


@pytest.mark.parametrize(("transport", "hostile"), CASES)
@fuzz_settings(max_examples=4)
@given(data=st.data())
def test_a_hostile_reply_gets_the_caller_a_clean_answer(
    gateways: dict[str, GatewayServer],
    fake_upstream: FakeUpstream,
    elsewhere: FakeUpstream,
    transport: str,
    hostile: Hostile,
    data: st.DataObject,
) -> None:
    target = data.draw(st.sampled_from(TARGETS))
    reply = hostile.build(data.draw, target, elsewhere.url)
    fake_upstream.reset()
    elsewhere.reset()
    fake_upstream.reply(reply)

    exchange = ask(gateways[transport], target, is_stream=hostile.is_stream)

    check_exchange(exchange, secrets=SECRETS, upstream_statuses=UPSTREAM_STATUSES)
    check_outcome(exchange, hostile.outcome)
    assert elsewhere.requests == []
    assert [GATEWAY_KEY in str(request.headers) for request in fake_upstream.requests] == [False]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_gateway_serves_well_after_the_hostile_replies(
    gateways: dict[str, GatewayServer], fake_upstream: FakeUpstream, transport: str
) -> None:
    gateway = gateways[transport]
    fake_upstream.reply(json_reply(completion_payload()), sse_reply(chunk_payloads()))

    answer = ask(gateway, TARGETS[0], is_stream=False)
    stream = ask(gateway, TARGETS[0], is_stream=True)
    health = httpx.get(f"{gateway.url}/healthz", timeout=CLIENT_TIMEOUT_S)

    assert answer.status == 200
    assert json.loads(answer.body)["choices"][0]["message"]["content"] == "hi there"
    assert stream.status == 200
    assert "error" not in check_stream(stream, upstream_statuses=())[-1]
    assert health.status_code == 200
