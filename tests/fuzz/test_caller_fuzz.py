"""Callers sending anything: cases drawn from the gateway's own OpenAPI document (valid and
deliberately invalid, by schemathesis) and raw HTTP requests (odd methods, paths, headers,
content types and bodies), with and without a valid key, against a running gateway in real
mode over each transport (the fake upstream answering everything well) and in mock mode.

Every response keeps the contract of `tests/fuzz/contract.py`; the module's log output holds
no crash (checked by the `gateway_logs` fixture), and the gateway still answers afterwards.
"""

import http.client
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import requests
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from ai_gateway.app import create_app
from tests.conftest import ONE_ATTEMPT, make_settings
from tests.e2e.conftest import real_mode
from tests.e2e.server import GatewayServer
from tests.fake_upstream import FakeUpstream
from tests.fakes import GATEWAY_KEY, MODEL, UPSTREAM_KEY
from tests.fuzz.conftest import GatewayLogs
from tests.fuzz.contract import Exchange, check_exchange
from tests.fuzz.odd_requests import UNIFIED_MODEL, RawRequest, any_requests, chat_requests, mostly
from tests.fuzz.runs import fuzz_settings

# Generous: an upstream timeout here would be a 502 the fake never meant.
UPSTREAM_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 20.0
SECRETS = (UPSTREAM_KEY, GATEWAY_KEY)
CHAT = "/v1/chat/completions"
PROVIDER_CHAT = "/{provider}/v1/chat/completions"
GET_PATHS = ("/v1/models", "/{provider}/v1/models", "/v1/deployments/health", "/healthz", "/readyz")


@pytest.fixture(scope="module", params=["native", "sdk", "mock"])
def gateway(
    request: pytest.FixtureRequest, fake_upstream_server: FakeUpstream, gateway_logs: GatewayLogs
) -> Iterator[GatewayServer]:
    """Cerebras in real mode over each transport against the fake upstream, or in mock mode."""
    if request.param == "mock":
        settings = make_settings(cerebras_mock="true")
    else:
        base_url = fake_upstream_server.url + "/v1/"
        settings = real_mode(request.param, base_url=base_url, timeout=UPSTREAM_TIMEOUT_S)
    with GatewayServer(create_app(settings, config=ONE_ATTEMPT)) as server:
        yield server


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        yield client


@pytest.fixture(scope="module")
def api_schema(gateway: GatewayServer) -> schemathesis.BaseSchema:
    """The gateway's published document, as fetched from it without a key."""
    response = httpx.get(f"{gateway.url}/openapi.json", timeout=CLIENT_TIMEOUT_S)
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    return schemathesis.openapi.from_dict(document)


@pytest.fixture(scope="module")
def case_strategies(api_schema: schemathesis.BaseSchema) -> list[st.SearchStrategy[Any]]:
    """Valid and invalid cases for every operation; the chat operations twice as often, once
    with `provider` a real one."""
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        chat = api_schema[CHAT]["POST"]
        per_provider = api_schema[PROVIDER_CHAT]["POST"]
        strategies += [
            chat.as_strategy(mode),
            chat.as_strategy(mode),
            per_provider.as_strategy(mode, path_parameters={"provider": "cerebras"}),
            per_provider.as_strategy(mode),
        ]
        strategies += [api_schema[path]["GET"].as_strategy(mode) for path in GET_PATHS]
    return strategies


# Authorization as sent: the valid key most of the time, else none, a wrong one, or whatever
# the case came with (schemathesis sends random and missing credentials of its own).
KEY_CHOICES = mostly(st.just("valid"), st.sampled_from(["missing", "wrong", "as generated"]))


def with_key(headers: dict[str, str], choice: str) -> dict[str, str]:
    """`headers` with the Authorization `choice` names."""
    headers = {
        k: v for k, v in headers.items() if k.lower() != "authorization" or choice == "as generated"
    }
    if choice == "valid":
        headers["Authorization"] = f"Bearer {GATEWAY_KEY}"
    elif choice == "wrong":
        headers["Authorization"] = "Bearer sk-not-a-gateway-key"
    return headers


def routable(case: Any, data: st.DataObject) -> None:
    """Most valid chat bodies get a model the gateway serves (and some a stream), so they
    reach the upstream instead of ending at model resolution."""
    is_chat = isinstance(case.body, dict) and "messages" in case.body
    if not (is_chat and data.draw(st.sampled_from([True, True, False]))):
        return
    is_per_provider = case.path == PROVIDER_CHAT and case.path_parameters == {
        "provider": "cerebras"
    }
    case.body["model"] = MODEL if is_per_provider else UNIFIED_MODEL
    case.body["stream"] = data.draw(st.sampled_from([True, case.body.get("stream"), False]))


def call_case(session: requests.Session, gateway: GatewayServer, case: Any, key: str) -> Exchange:
    """Send a schemathesis case as it is, but for its Authorization."""
    kwargs = case.as_transport_kwargs(base_url=gateway.url)
    kwargs["headers"] = with_key(kwargs.get("headers") or {}, key)
    response = session.request(**kwargs, timeout=CLIENT_TIMEOUT_S)
    sent = kwargs.get("json", kwargs.get("data"))
    return Exchange(
        method=kwargs["method"],
        url=response.url,
        status=response.status_code,
        headers=dict(response.headers),
        body=response.content,
        sent=f"{kwargs['headers']} {sent!r}",
    )


@fuzz_settings(max_examples=50)
@given(data=st.data())
def test_cases_from_the_openapi_document_get_clean_answers(
    gateway: GatewayServer,
    answering_upstream: FakeUpstream,
    session: requests.Session,
    case_strategies: list[st.SearchStrategy[Any]],
    data: st.DataObject,
) -> None:
    case = data.draw(st.sampled_from(case_strategies).flatmap(lambda strategy: strategy))
    routable(case, data)

    exchange = call_case(session, gateway, case, data.draw(KEY_CHOICES))

    check_exchange(exchange, secrets=SECRETS)


def send_raw(gateway: GatewayServer, request: RawRequest) -> Exchange:
    """Send the request byte for byte (http.client checks less than httpx: trailing spaces in
    a header value, for one, go as they are)."""
    method, path, headers, body = request
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=CLIENT_TIMEOUT_S)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        received = response.read()
    finally:
        connection.close()
    return Exchange(
        method=method,
        url=path,
        status=response.status,
        headers=dict(response.getheaders()),
        body=received,
        sent=f"{headers} {body[:400]!r}",
    )


@fuzz_settings(max_examples=120)
@given(raw=chat_requests())
def test_chat_requests_of_any_body_and_headers_get_clean_answers(
    gateway: GatewayServer, answering_upstream: FakeUpstream, raw: RawRequest
) -> None:
    check_exchange(send_raw(gateway, raw), secrets=SECRETS)


@fuzz_settings(max_examples=40)
@given(raw=any_requests())
def test_any_method_on_any_path_gets_a_clean_answer(
    gateway: GatewayServer, answering_upstream: FakeUpstream, raw: RawRequest
) -> None:
    check_exchange(send_raw(gateway, raw), secrets=SECRETS)


def test_the_run_reached_every_outcome(gateway_logs: GatewayLogs) -> None:
    """The fuzzing above was not all of one kind: the upstream was reached, streams included,
    and requests were refused for many reasons (read from the request log lines)."""
    served = [e for e in gateway_logs.events if e.get("event") == "request"]
    if not served:
        pytest.skip("only meaningful after the fuzz tests of this module")
    refused = {e["status"] for e in served if 400 <= e["status"] < 500}
    streams = [e for e in served if e["status"] == 200 and e.get("stream")]

    assert {400, 401, 404, 405} <= refused, refused
    assert len(streams) >= 3


def test_the_gateway_still_serves_after_the_run(
    gateway: GatewayServer, answering_upstream: FakeUpstream
) -> None:
    body = {"model": UNIFIED_MODEL, "messages": [{"role": "user", "content": "hi"}]}

    health = httpx.get(f"{gateway.url}/healthz", timeout=CLIENT_TIMEOUT_S)
    chat = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
        timeout=CLIENT_TIMEOUT_S,
    )

    assert health.status_code == 200
    assert chat.status_code == 200
    assert chat.json()["object"] == "chat.completion"
