"""Aliases over Cerebras and two more vendors, each a fake upstream over real HTTP, with faults.

Every test runs its own gateway (breaker state is per process) from a YAML config, the way an
operator writes one.
"""

import concurrent.futures
import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from ai_gateway.app import create_app
from ai_gateway.config.loader import parse_config
from tests.conftest import make_settings
from tests.e2e.server import GatewayServer, openai_client
from tests.fake_upstream import FakeUpstream, Reply, json_reply, sse_reply
from tests.fakes import GATEWAY_KEY, UPSTREAM_KEY, chunk_payloads, completion_payload

ALPHA_KEY = "ak-alpha-test-0123456789"
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def alpha() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def beta() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def gamma() -> Iterator[FakeUpstream]:
    """Cerebras's upstream."""
    with FakeUpstream() as server:
        yield server


@contextmanager
def gateway(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream, routing: str
) -> Iterator[GatewayServer]:
    """A gateway whose providers are cerebras (gamma), alpha and beta; `routing` is the YAML of
    the `aliases:` and `routing:` sections."""
    text = f"""
providers:
  alpha:
    base_url: {alpha.url}/v1
    api_key_env: ALPHA_KEY
    headers: {{X-Team: search}}
  beta:
    base_url: {beta.url}/v1
{routing}
"""
    settings = make_settings(
        cerebras_mock="false",
        cerebras_api_key=UPSTREAM_KEY,
        cerebras_base_url=gamma.url,
        request_timeout_s=5.0,
    )
    config = parse_config(text)
    app = create_app(settings, config=config, environ={"ALPHA_KEY": ALPHA_KEY})
    with GatewayServer(app) as server:
        yield server


def chat(server: GatewayServer, model: str = "smart", **body: Any) -> httpx.Response:
    """One chat request to the running gateway."""
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": model, "messages": MESSAGES, **body},
        headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
        timeout=15,
    )


def health(server: GatewayServer) -> dict[str, dict[str, Any]]:
    """The breakers by deployment."""
    response = httpx.get(
        f"{server.url}/v1/deployments/health",
        headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
    )
    assert response.status_code == 200
    return {entry["deployment"]: entry for entry in response.json()["data"]}


def reply_text(response: httpx.Response) -> str:
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


SMART = """
aliases:
  smart:
    deployments:
      - model: alpha/a-model
      - model: beta/b-model
routing:
  retries: 0
"""


def test_an_alias_falls_back_to_its_next_deployment_on_a_500(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(json_reply({"error": {"message": "boom"}}, status=500))
    beta.reply(json_reply(completion_payload(text="from beta")))
    with gateway(alpha, beta, gamma, SMART) as server:
        response = chat(server)

    assert response.status_code == 200
    assert reply_text(response) == "from beta"
    assert response.headers["x-ai-gateway-deployment"] == "beta/b-model"
    assert [r.json["model"] for r in alpha.requests] == ["a-model"]
    assert alpha.requests[0].headers["authorization"] == f"Bearer {ALPHA_KEY}"
    assert alpha.requests[0].headers["x-team"] == "search"
    assert "authorization" not in beta.requests[0].headers  # beta declares no key
    assert [r.json["model"] for r in beta.requests] == ["b-model"]


def test_a_400_is_returned_at_once_without_retry_or_fallback(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(
        json_reply({"error": {"message": "bad temperature", "param": "temperature"}}, status=400)
    )
    with gateway(alpha, beta, gamma, SMART.replace("retries: 0", "retries: 3")) as server:
        response = chat(server, temperature=9)

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "bad temperature"
    assert response.json()["error"]["param"] == "temperature"
    assert len(alpha.requests) == 1
    assert beta.requests == []


def test_retry_after_is_honoured_before_the_same_deployment_is_tried_again(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    config = """
routing:
  retries: 1
  backoff: {initial_ms: 1, max_ms: 1}
"""
    alpha.reply(
        json_reply(
            {"error": {"message": "slow down"}}, status=429, headers={"retry-after-ms": "400"}
        ),
        json_reply(completion_payload(text="second try")),
    )
    with gateway(alpha, beta, gamma, config) as server:
        started = time.monotonic()
        response = chat(server, model="alpha/a-model")
        elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert reply_text(response) == "second try"
    assert len(alpha.requests) == 2
    assert elapsed >= 0.4


def test_retries_back_off_and_stop_at_their_limit_with_the_upstream_error(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    config = """
routing:
  retries: 2
  backoff: {initial_ms: 100, max_ms: 100}
"""
    alpha.reply_with(lambda _: json_reply({"error": {"message": "down"}}, status=503))
    with gateway(alpha, beta, gamma, config) as server:
        started = time.monotonic()
        response = chat(server, model="alpha/a-model")
        elapsed = time.monotonic() - started

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert len(alpha.requests) == 3
    assert elapsed >= 0.1  # two backoffs of 50-100 ms each


def test_a_retry_after_beyond_the_cap_is_not_waited_for(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    config = SMART.replace("retries: 0", "retries: 2\n  retry_after_max_s: 5")
    alpha.reply_with(
        lambda _: json_reply(
            {"error": {"message": "quota"}}, status=429, headers={"retry-after": "120"}
        )
    )
    beta.reply(json_reply(completion_payload(text="from beta")))
    with gateway(alpha, beta, gamma, config) as server:
        response = chat(server)

    assert response.status_code == 200
    assert len(alpha.requests) == 1


def test_when_every_deployment_fails_the_caller_gets_the_most_informative_error(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(
        json_reply({"error": {"message": "slow down"}}, status=429, headers={"retry-after": "7"})
    )
    beta.reply(json_reply({"error": {"message": "boom"}}, status=500))
    with gateway(alpha, beta, gamma, SMART) as server:
        response = chat(server)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"] == {
        "message": "slow down",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }


BREAKER = SMART + "  breaker: {consecutive_failures: 2, cooldown_s: 0.5}\n"


def test_a_breaker_opens_skips_its_deployment_then_half_opens_and_closes(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(*[json_reply({"error": {"message": "boom"}}, status=500)] * 2)
    beta.reply_with(lambda _: json_reply(completion_payload(text="from beta")))
    with gateway(alpha, beta, gamma, BREAKER) as server:
        assert health(server)["alpha/a-model"]["state"] == "closed"
        for _ in range(2):
            assert chat(server).headers["x-ai-gateway-deployment"] == "beta/b-model"
        assert health(server)["alpha/a-model"]["state"] == "open"

        assert chat(server).headers["x-ai-gateway-deployment"] == "beta/b-model"
        assert len(alpha.requests) == 2  # open: skipped while beta serves

        time.sleep(0.6)
        assert health(server)["alpha/a-model"]["state"] == "half_open"
        alpha.reply(json_reply(completion_payload(text="alpha is back")))
        probe = chat(server)
        assert reply_text(probe) == "alpha is back"
        assert health(server)["alpha/a-model"]["state"] == "closed"


def test_a_failed_probe_reopens_the_breaker(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply_with(lambda _: json_reply({"error": {"message": "boom"}}, status=500))
    beta.reply_with(lambda _: json_reply(completion_payload(text="from beta")))
    with gateway(alpha, beta, gamma, BREAKER) as server:
        for _ in range(2):
            chat(server)
        time.sleep(0.6)
        assert chat(server).headers["x-ai-gateway-deployment"] == "beta/b-model"
        assert len(alpha.requests) == 3  # the probe
        state = health(server)["alpha/a-model"]
        assert state["state"] == "open"
        assert state["consecutive_failures"] == 3


def test_when_every_breaker_is_open_the_gateway_still_serves(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    config = BREAKER.replace("cooldown_s: 0.5", "cooldown_s: 60")
    alpha.reply(*[json_reply({"error": {"message": "boom"}}, status=500)] * 2)
    beta.reply(*[json_reply({"error": {"message": "boom"}}, status=500)] * 2)
    with gateway(alpha, beta, gamma, config) as server:
        for _ in range(2):
            assert chat(server).status_code == 502
        states = health(server)
        assert {states[k]["state"] for k in ("alpha/a-model", "beta/b-model")} == {"open"}

        alpha.reply(json_reply(completion_payload(text="alpha recovered")))
        beta.reply(json_reply(completion_payload(text="beta recovered")))
        response = chat(server)

    assert response.status_code == 200
    # alpha failed first, so it failed least recently and is tried first
    assert reply_text(response) == "alpha recovered"


HEDGED = """
aliases:
  smart:
    hedge_after_ms: 100
    deployments:
      - model: alpha/a-model
      - model: beta/b-model
routing:
  retries: 0
"""


def usage_logged(logs: list[dict[str, Any]]) -> list[Any]:
    """The prompt_tokens of each request log line."""
    return [entry["prompt_tokens"] for entry in logs if entry["event"] == "request"]


def test_a_hedged_request_takes_the_faster_deployment_and_cancels_the_slower(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(json_reply(completion_payload(text="slow alpha"), delay=5.0))
    fast = completion_payload(text="fast beta")
    fast["usage"] = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
    beta.reply(json_reply(fast))
    with gateway(alpha, beta, gamma, HEDGED) as server, capture_logs() as logs:
        started = time.monotonic()
        response = chat(server)
        elapsed = time.monotonic() - started
        assert alpha.wait_for_disconnects(1, timeout=3.0)

    assert reply_text(response) == "fast beta"
    assert response.json()["usage"]["prompt_tokens"] == 11
    assert elapsed < 4.0  # did not wait for alpha's 5 s
    assert usage_logged(logs) == [11]  # counted once, from the winner
    assert any(entry["event"] == "hedge_started" for entry in logs)


def test_a_hedged_stream_takes_the_first_first_chunk_and_closes_the_other(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(dataclasses.replace(sse_reply(chunk_payloads(["slow"])), delay=5.0))
    beta.reply(sse_reply(chunk_payloads(["fa", "st"])))
    with gateway(alpha, beta, gamma, HEDGED) as server:
        stream = openai_client(server).chat.completions.create(
            model="smart",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert alpha.wait_for_disconnects(1, timeout=3.0)

    assert text == "fast"


def test_a_hedge_is_not_started_when_the_first_deployment_answers_in_time(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(json_reply(completion_payload(text="quick alpha")))
    with gateway(alpha, beta, gamma, HEDGED.replace("100", "2000")) as server:
        response = chat(server)

    assert reply_text(response) == "quick alpha"
    assert beta.requests == []


def test_a_stream_falls_back_when_its_first_deployment_fails_before_the_first_byte(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(json_reply({"error": {"message": "overloaded"}}, status=503))
    beta.reply(sse_reply(chunk_payloads(["from ", "beta"])))
    with gateway(alpha, beta, gamma, SMART) as server:
        stream = openai_client(server).chat.completions.create(
            model="smart",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert text == "from beta"
    assert len(alpha.requests) == 1


def test_a_stream_does_not_fall_back_once_its_first_byte_was_sent(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(sse_reply(chunk_payloads(["partial", "never"]), drop_after=2, chunk_delay=0.05))
    beta.reply(sse_reply(chunk_payloads(["from beta"])))
    with gateway(alpha, beta, gamma, SMART.replace("retries: 0", "retries: 2")) as server:
        response = chat(server, stream=True)

    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert response.status_code == 200, events
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "partial", events
    assert json.loads(events[-2])["error"]["code"] == "upstream_error"
    assert events[-1] == "[DONE]"
    assert beta.requests == []


TIMED = """
aliases:
  smart:
    deployments:
      - model: alpha/a-model
        timeouts: {first_byte_s: 0.3}
      - model: beta/b-model
  bounded:
    deployments:
      - model: alpha/a-model
        timeouts: {total_s: 0.5}
routing:
  retries: 0
"""


def test_a_deployment_without_a_first_byte_in_time_falls_back(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(dataclasses.replace(sse_reply(chunk_payloads(["late"])), delay=3.0))
    beta.reply(sse_reply(chunk_payloads(["on ", "time"])))
    with gateway(alpha, beta, gamma, TIMED) as server:
        response = chat(server, stream=True)
        assert alpha.wait_for_disconnects(1, timeout=3.0)

    assert response.status_code == 200
    assert '"on "' in response.text
    assert response.headers["x-ai-gateway-deployment"] == "beta/b-model"


def test_a_stream_over_its_total_time_ends_with_a_timeout_event(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(sse_reply(chunk_payloads(["a"] * 20), chunk_delay=0.1))
    with gateway(alpha, beta, gamma, TIMED) as server:
        response = chat(server, model="bounded", stream=True)

    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert response.status_code == 200
    assert json.loads(events[-2])["error"]["code"] == "upstream_timeout"
    assert events[-1] == "[DONE]"


def test_a_json_answer_over_its_total_time_falls_back(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    config = TIMED.replace("first_byte_s: 0.3", "total_s: 0.3")
    alpha.reply(json_reply(completion_payload(text="late"), delay=3.0))
    beta.reply(json_reply(completion_payload(text="on time")))
    with gateway(alpha, beta, gamma, config) as server:
        response = chat(server)

    assert reply_text(response) == "on time"


PARAMS = """
providers:
  alpha:
    base_url: ALPHA_URL/v1
    api_key_env: ALPHA_KEY
    params: {logprobs: drop}
    models:
      a-model: {params: {tools: reject}}
  beta:
    base_url: BETA_URL/v1
aliases:
  smart:
    deployments:
      - model: alpha/a-model
        params: {temperature: 0.1}
      - model: beta/b-model
routing:
  retries: 0
"""


@contextmanager
def params_gateway(alpha: FakeUpstream, beta: FakeUpstream) -> Iterator[GatewayServer]:
    config = parse_config(PARAMS.replace("ALPHA_URL", alpha.url).replace("BETA_URL", beta.url))
    app = create_app(
        make_settings(cerebras_mock="true"), config=config, environ={"ALPHA_KEY": ALPHA_KEY}
    )
    with GatewayServer(app) as server:
        yield server


def test_deployment_overrides_and_the_param_policy_shape_what_each_upstream_gets(
    alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    alpha.reply(json_reply(completion_payload()))
    with params_gateway(alpha, beta) as server:
        response = chat(server, temperature=0.9, logprobs=True, seed=3)

    assert response.status_code == 200
    sent = alpha.requests[0].json
    assert sent["temperature"] == 0.1
    assert sent["seed"] == 3
    assert "logprobs" not in sent


def test_a_rejected_param_skips_the_deployment_in_an_alias_and_is_a_400_directly(
    alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    beta.reply(json_reply(completion_payload(text="beta has tools")))
    with params_gateway(alpha, beta) as server:
        via_alias = chat(server, tools=tools)
        direct = chat(server, model="alpha/a-model", tools=tools)

    assert reply_text(via_alias) == "beta has tools"
    assert alpha.requests == []
    assert direct.status_code == 400
    assert direct.json()["error"]["param"] == "tools"
    assert direct.json()["error"]["code"] == "unsupported_parameter"


def test_cerebras_serves_in_an_alias_through_the_openai_sdk(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    config = """
aliases:
  fast:
    deployments:
      - model: cerebras/llama-3.3-70b
      - model: alpha/a-model
routing:
  retries: 0
"""
    gamma.reply(json_reply({"error": {"message": "queue full"}}, status=503))
    alpha.reply(json_reply(completion_payload(text="alpha covers")))
    gamma.reply(json_reply(completion_payload(text="cerebras answers")))
    with gateway(alpha, beta, gamma, config) as server:
        client = openai_client(server)
        first = client.chat.completions.create(model="fast", messages=MESSAGES)  # type: ignore[arg-type]
        second = client.chat.completions.create(model="fast", messages=MESSAGES)  # type: ignore[arg-type]

    assert first.choices[0].message.content == "alpha covers"
    assert second.choices[0].message.content == "cerebras answers"
    assert gamma.requests[0].path == "/v1/chat/completions"
    assert gamma.requests[0].json["model"] == "llama-3.3-70b"
    assert gamma.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_the_model_list_shows_aliases_and_the_health_endpoint_needs_a_key(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(json_reply({"object": "list", "data": [{"id": "a-model", "object": "model"}]}))
    beta.reply(json_reply({"object": "list", "data": [{"id": "b-model", "object": "model"}]}))
    gamma.reply(json_reply({"object": "list", "data": [{"id": "llama", "object": "model"}]}))
    with gateway(alpha, beta, gamma, SMART) as server:
        models = openai_client(server).models.list()
        anonymous = httpx.get(f"{server.url}/v1/deployments/health")
        states = health(server)

    ids = [model.id for model in models.data]
    assert ids[0] == "smart"
    assert {"alpha/a-model", "beta/b-model", "cerebras/llama"} <= set(ids)
    assert anonymous.status_code == 401
    assert set(states) >= {"alpha/a-model", "beta/b-model"}


def test_a_declared_provider_without_its_key_is_skipped_by_fallback(
    alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    config = parse_config(PARAMS.replace("ALPHA_URL", alpha.url).replace("BETA_URL", beta.url))
    beta.reply(json_reply(completion_payload(text="beta")))
    app = create_app(make_settings(cerebras_mock="true"), config=config, environ={})
    with GatewayServer(app) as server:
        via_alias = chat(server)
        direct = chat(server, model="alpha/a-model")

    assert reply_text(via_alias) == "beta"
    assert direct.status_code == 503
    assert "ALPHA_KEY" in direct.json()["error"]["message"]
    assert alpha.requests == []


def test_a_hanging_reply_counts_as_a_disconnect_when_the_gateway_gives_up(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(Reply(hang=True))
    beta.reply(json_reply(completion_payload(text="beta")))
    with gateway(alpha, beta, gamma, TIMED.replace("first_byte_s", "total_s")) as server:
        response = chat(server)
        assert alpha.wait_for_disconnects(1, timeout=3.0)

    assert reply_text(response) == "beta"


def test_an_upstream_404_moves_an_alias_to_its_next_deployment(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(json_reply({"error": {"message": "model a-model does not exist"}}, status=404))
    beta.reply(json_reply(completion_payload(text="from beta")))
    with gateway(alpha, beta, gamma, SMART) as server:
        response = chat(server)

    assert reply_text(response) == "from beta"


def test_a_failed_request_logs_how_many_attempts_it_made(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    alpha.reply(json_reply({"error": {"message": "boom"}}, status=500))
    beta.reply(json_reply({"error": {"message": "boom"}}, status=502))
    with gateway(alpha, beta, gamma, SMART) as server, capture_logs() as logs:
        response = chat(server)

    lines = [entry for entry in logs if entry["event"] == "request"]
    assert response.status_code == 502
    assert lines[-1]["attempts"] == 2
    assert lines[-1]["route"] == "smart"
    failed = [entry for entry in logs if entry["event"] == "attempt_failed"]
    assert [entry["deployment"] for entry in failed] == ["alpha/a-model", "beta/b-model"]


def test_a_model_name_longer_than_any_vendors_is_a_400(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    with gateway(alpha, beta, gamma, SMART) as server:
        response = chat(server, model="alpha/" + "m" * 300)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert alpha.requests == []


def test_many_hedged_requests_at_once_each_cancel_their_loser_and_leave_no_probe(
    alpha: FakeUpstream, beta: FakeUpstream, gamma: FakeUpstream
) -> None:
    requests = 24
    alpha.reply_with(lambda _: json_reply(completion_payload(text="slow"), delay=2.0))
    beta.reply_with(lambda _: json_reply(completion_payload(text="fast")))
    with gateway(alpha, beta, gamma, HEDGED) as server:
        with concurrent.futures.ThreadPoolExecutor(max_workers=requests) as pool:
            answers = list(pool.map(lambda _: chat(server), range(requests)))
        assert alpha.wait_for_disconnects(requests, timeout=5.0)
        states = health(server)

    assert {reply_text(answer) for answer in answers} == {"fast"}
    assert len(beta.requests) == requests
    for key in ("alpha/a-model", "beta/b-model"):
        assert states[key]["state"] == "closed"  # a cancelled loser is no failure
        assert states[key]["probe_in_flight"] is False
