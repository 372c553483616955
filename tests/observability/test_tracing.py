"""Traces end to end: `ai-gateway serve` as a real process, in real mode against the fake
upstream, exporting over OTLP/HTTP to a receiver on 127.0.0.1 that decodes the protobuf. One
SERVER span per request, one CLIENT span per upstream attempt under it, the GenAI attributes,
error types on failures, and no prompt or completion text unless asked for."""

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ai_gateway.api.record import MAX_STREAMED_TEXT, RequestRecord
from ai_gateway.config.file import GatewayConfig
from ai_gateway.errors import ProviderError
from ai_gateway.observability.tracing import is_server_error
from tests.conftest import ONE_ATTEMPT
from tests.e2e.test_cli_process import base_env, run_gateway
from tests.e2e.test_ledger_crash import children_of
from tests.fake_upstream import FakeUpstream, json_reply
from tests.fakes import GATEWAY_KEY, MODEL, UPSTREAM_KEY, FakeProvider, completion_payload
from tests.observability.otlp_receiver import ReceivedSpan, Receiver, otlp_receiver
from tests.observability.test_metrics import Gateway, SlowProvider, alias, gateway
from tests.usage.ledger_rows import ledger_rows

PROMPT = "the secret plans for the moon base"
ANSWER = "a completion nobody should see in a trace"
DIRECT = f"cerebras/{MODEL}"
GENAI_ATTEMPT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "cerebras",
    "gen_ai.request.model": MODEL,
}


@contextmanager
def traced_gateway(
    fake_upstream: FakeUpstream, tmp_path: Path, **extra: str
) -> Iterator[tuple[str, Receiver]]:
    """The gateway exporting spans to a fresh receiver, flushed every 50 ms."""
    with otlp_receiver() as (endpoint, receiver):
        env = base_env(
            GATEWAY_API_KEYS=GATEWAY_KEY,
            CEREBRAS_API_KEY=UPSTREAM_KEY,
            CEREBRAS_BASE_URL=fake_upstream.url,
            CEREBRAS_MOCK="false",
            LOG_FORMAT="json",
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_BSP_SCHEDULE_DELAY="50",
            **extra,
        )
        with contextmanager(run_gateway)(env, tmp_path) as (url, _, _):
            yield url, receiver


def chat(url: str, request_id: str) -> httpx.Response:
    body = {"model": DIRECT, "messages": [{"role": "user", "content": PROMPT}]}
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}", "x-request-id": request_id}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def trace_of(spans: list[ReceivedSpan], request_id: str) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The request's SERVER span and its CLIENT children, in the order they started."""
    (server,) = [
        s for s in spans if s.is_server and s.attributes["ai_gateway.request_id"] == request_id
    ]
    children = [s for s in spans if s.trace_id == server.trace_id and s.span_id != server.span_id]
    assert all(c.parent_span_id == server.span_id and c.is_client for c in children)
    return server, children


def without(attributes: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if k not in names}


def test_each_request_and_attempt_is_a_span_with_the_genai_attributes(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.reply(
        json_reply(completion_payload(text=ANSWER)),
        json_reply({"error": {"message": "overloaded"}}, status=500),
        json_reply(completion_payload(text=ANSWER)),
        json_reply({"error": {"message": "bad key"}}, status=401),
    )
    with traced_gateway(fake_upstream, tmp_path) as (url, receiver):
        assert chat(url, "ok-1").status_code == 200
        assert chat(url, "retried-1").status_code == 200
        assert chat(url, "failed-1").status_code == 502
        spans = receiver.wait_for(3 + 4)  # three requests, four attempts

    server, (attempt,) = trace_of(spans, "ok-1")
    assert server.name == f"chat {DIRECT}"
    assert server.service_name == "ai-gateway"
    assert without(server.attributes, "ai_gateway.key_id", "ai_gateway.cost_usd") == {
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "ai_gateway.request_id": "ok-1",
        "http.response.status_code": 200,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": DIRECT,
        "gen_ai.provider.name": "cerebras",
        "gen_ai.response.model": MODEL,
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 2,
        "ai_gateway.attempts": 1,
        "ai_gateway.stream": False,
    }
    assert not server.is_error
    assert attempt.name == f"chat {MODEL}"
    assert attempt.attributes == {
        **GENAI_ATTEMPT,
        "gen_ai.response.model": MODEL,
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 2,
        "ai_gateway.route": DIRECT,
        "ai_gateway.deployment": DIRECT,
        "ai_gateway.attempt.kind": "first",
    }

    server, (failed, retried) = trace_of(spans, "retried-1")
    assert server.attributes["ai_gateway.attempts"] == 2
    assert "error.type" not in server.attributes
    assert failed.attributes["error.type"] == "upstream_error"
    assert failed.is_error
    assert "gen_ai.usage.input_tokens" not in failed.attributes
    assert retried.attributes["ai_gateway.attempt.kind"] == "retry"
    assert retried.attributes["gen_ai.usage.output_tokens"] == 2
    assert not retried.is_error

    server, (refused,) = trace_of(spans, "failed-1")
    assert server.attributes["error.type"] == "upstream_auth_error"
    assert server.attributes["http.response.status_code"] == 502
    assert server.is_error
    assert "gen_ai.provider.name" not in server.attributes
    assert refused.attributes == {
        **GENAI_ATTEMPT,
        "error.type": "upstream_auth_error",
        "ai_gateway.route": DIRECT,
        "ai_gateway.deployment": DIRECT,
        "ai_gateway.attempt.kind": "first",
    }
    everything = repr([s.attributes for s in spans])
    assert PROMPT not in everything
    assert ANSWER not in everything
    assert receiver.bad_paths == []


def holders_of_listening_socket(port: int) -> set[int]:
    """The processes holding the socket that listens on `port` (/proc/net/tcp names its inode)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    (inode,) = [row[9] for row in rows if row[1].endswith(f":{port:04X}") and row[3] == "0A"]
    holders = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:  # a process that ended, or one we may not look into
            continue
        if f"socket:[{inode}]" in links:
            holders.add(int(fd_dir.parent.name))
    return holders


def read_or_nothing(path: Path) -> bytes:
    """A /proc file's bytes; none for a process that has just ended."""
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_the_helper_processes_hold_none_of_the_gateway_s_descriptors(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.reply(json_reply(completion_payload()))
    with traced_gateway(fake_upstream, tmp_path) as (url, receiver):
        assert chat(url, "fds-1").status_code == 200
        receiver.wait_for(2)
        port = int(url.rsplit(":", 1)[1])
        (gateway,) = [
            int(cmdline.parent.name)
            for cmdline in Path("/proc").glob("[0-9]*/cmdline")
            if f"--port\0{port}\0".encode() in read_or_nothing(cmdline)
        ]
        deadline = time.monotonic() + 10
        database = f"sqlite:///{tmp_path / 'ai-gateway.db'}"
        while not asyncio.run(ledger_rows(database)) and time.monotonic() < deadline:
            time.sleep(0.05)  # the writer has started, and read its first line, once it wrote
        assert len(asyncio.run(ledger_rows(database))) == 1
        assert len(children_of(gateway)) == 2  # the span exporter and the ledger writer
        assert holders_of_listening_socket(port) == {gateway}


def test_prompt_and_completion_text_are_captured_only_when_asked(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.reply(json_reply(completion_payload(text=ANSWER)))
    with traced_gateway(
        fake_upstream, tmp_path, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true"
    ) as (url, receiver):
        assert chat(url, "captured-1").status_code == 200
        spans = receiver.wait_for(2)

    server, (attempt,) = trace_of(spans, "captured-1")
    assert PROMPT in attempt.attributes["gen_ai.input.messages"]
    assert ANSWER in attempt.attributes["gen_ai.output.messages"]
    assert PROMPT not in repr(server.attributes)


@asynccontextmanager
async def traced_app(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *providers: FakeProvider,
    config: GatewayConfig = ONE_ATTEMPT,
    **env: str,
) -> AsyncIterator[tuple[Gateway, Receiver]]:
    """The app in process, exporting to a receiver every 20 ms (the SDK reads OTEL_BSP_*)."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with otlp_receiver() as (endpoint, receiver):
        async with gateway(
            tmp_path, *providers, config=config, otel_exporter_otlp_endpoint=endpoint
        ) as gw:
            yield gw, receiver


@pytest.mark.anyio
async def test_a_stream_attempt_names_the_model_of_its_first_chunk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with traced_app(monkeypatch, tmp_path, FakeProvider()) as (gw, receiver):
        response = await gw.chat(stream=True, headers={"x-request-id": "stream-1"})
        assert response.status_code == 200
        spans = await asyncio.to_thread(receiver.wait_for, 2)

    server, (attempt,) = trace_of(spans, "stream-1")
    assert server.attributes["ai_gateway.stream"] is True
    assert server.attributes["gen_ai.usage.output_tokens"] == 2
    assert attempt.attributes["gen_ai.response.model"] == MODEL
    assert "gen_ai.usage.output_tokens" not in attempt.attributes  # usage comes at the end


@pytest.mark.anyio
async def test_a_hedge_loser_is_a_cancelled_span_not_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    slow, fast = SlowProvider(name="alpha", delay_s=1.0), FakeProvider(name="beta")
    config = alias(f"alpha/{MODEL}", f"beta/{MODEL}", hedge_after_ms=20)
    async with traced_app(monkeypatch, tmp_path, slow, fast, config=config) as (gw, receiver):
        response = await gw.chat(model="smart", headers={"x-request-id": "hedged-1"})
        assert response.status_code == 200
        spans = await asyncio.to_thread(receiver.wait_for, 3)

    server, attempts = trace_of(spans, "hedged-1")
    kinds = {a.attributes["ai_gateway.deployment"]: a for a in attempts}
    loser, winner = kinds[f"alpha/{MODEL}"], kinds[f"beta/{MODEL}"]
    assert loser.attributes["ai_gateway.attempt.outcome"] == "cancelled"
    assert not loser.is_error
    assert winner.attributes["ai_gateway.attempt.kind"] == "hedge"
    assert server.name == "chat smart"


@pytest.mark.anyio
async def test_sampled_out_requests_export_nothing_and_are_still_counted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with traced_app(
        monkeypatch, tmp_path, FakeProvider(), OTEL_TRACES_SAMPLER="always_off"
    ) as (gw, receiver):
        assert (await gw.chat()).status_code == 200
        scrape = await gw.scrape()
        await asyncio.sleep(0.2)

    assert receiver.spans == []
    assert scrape.value("ai_gateway_requests_total", route=DIRECT, status_code="200") == 1


@pytest.mark.anyio
async def test_in_process_failures_and_captured_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    failing = FakeProvider(error=ProviderError("cerebras returned HTTP 500"))
    async with traced_app(
        monkeypatch,
        tmp_path,
        failing,
        OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true",
    ) as (gw, receiver):
        assert (await gw.chat(headers={"x-request-id": "failed-2"})).status_code == 502
        failing.error = None
        assert (await gw.chat(headers={"x-request-id": "ok-2"})).status_code == 200
        spans = await asyncio.to_thread(receiver.wait_for, 4)

    server, (attempt,) = trace_of(spans, "failed-2")
    assert server.is_error
    assert server.attributes["error.type"] == "upstream_error"
    assert attempt.is_error
    assert attempt.attributes["error.type"] == "upstream_error"
    assert "hello" in attempt.attributes["gen_ai.input.messages"]
    _, (answered,) = trace_of(spans, "ok-2")
    assert "hi there" in answered.attributes["gen_ai.output.messages"]


def record(status: int | None, code: str | None = None, *, left: bool = False) -> RequestRecord:
    made = RequestRecord("req_1", "POST", "/v1/chat/completions")
    made.status, made.error_code, made.is_client_closed = status, code, left
    return made


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        (record(200), False),
        (record(404, "model_not_found"), False),
        (record(502, "upstream_error"), True),
        (record(200, "upstream_timeout"), True),  # a stream that failed after its 200
        (record(None), True),
        (record(None, left=True), False),
    ],
)
def test_server_errors_are_5xx_failed_streams_and_no_response(
    made: RequestRecord, expected: bool
) -> None:
    assert is_server_error(made) is expected


CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.mark.anyio
async def test_a_caller_s_traceparent_is_continued_and_a_bad_one_starts_a_new_trace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with traced_app(monkeypatch, tmp_path, FakeProvider()) as (gw, receiver):
        continued = {
            "x-request-id": "continued-1",
            "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
            "tracestate": "vendor=1",
        }
        assert (await gw.chat(headers=continued)).status_code == 200
        bad = {"x-request-id": "bad-1", "traceparent": f"00-{'0' * 32}-{CALLER_SPAN}-01"}
        assert (await gw.chat(headers=bad)).status_code == 200
        assert (await gw.chat(headers={"x-request-id": "none-1"})).status_code == 200
        spans = await asyncio.to_thread(receiver.wait_for, 6)

    server, (attempt,) = trace_of(spans, "continued-1")
    assert (server.trace_id, server.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert attempt.trace_id == CALLER_TRACE
    for request_id in ("bad-1", "none-1"):
        server, _ = trace_of(spans, request_id)
        assert server.trace_id not in (CALLER_TRACE, "0" * 32)
        assert server.parent_span_id == ""  # a trace of its own


@pytest.mark.anyio
@pytest.mark.parametrize("capture", [True, False])
async def test_a_stream_s_completion_text_is_on_its_request_span_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capture: bool
) -> None:
    setting = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": str(capture).lower()}
    async with traced_app(monkeypatch, tmp_path, FakeProvider(), **setting) as (gw, receiver):
        response = await gw.chat(stream=True, headers={"x-request-id": "streamed-1"})
        assert response.status_code == 200
        spans = await asyncio.to_thread(receiver.wait_for, 2)

    events = [
        orjson.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: {")
    ]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert len(text) > 3
    server, (attempt,) = trace_of(spans, "streamed-1")
    if capture:
        assert orjson.loads(server.attributes["gen_ai.output.messages"]) == [
            {"role": "assistant", "content": text}
        ]
        assert text not in repr(attempt.attributes)  # an attempt span ends at its first chunk
    else:
        assert text not in repr([server.attributes, attempt.attributes])


def test_kept_stream_text_is_per_choice_and_bounded() -> None:
    made = RequestRecord("req_1", "POST", "/v1/chat/completions")
    made.streamed_text = {}
    long_text = "x" * (MAX_STREAMED_TEXT + 10)
    for data in (
        {"choices": [{"index": 1, "delta": {"content": "b"}}, {"index": 0, "delta": {}}]},
        {"choices": [{"index": 0, "delta": {"content": "a"}}]},
        {"choices": [{"index": 0, "delta": {"content": long_text}}]},
        {"choices": [{"index": 1, "delta": {"content": "more"}}]},
        {"choices": "not a list of choices"},
    ):
        made.keep_streamed_text(data)

    assert made.streamed_text[1] == ["b"]
    assert "".join(made.streamed_text[0]) == "a" + "x" * (MAX_STREAMED_TEXT - 2)
    assert made.streamed_chars == MAX_STREAMED_TEXT
