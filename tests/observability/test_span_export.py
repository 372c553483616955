"""The span exporter's child process: a span crosses the pipe with everything the OTLP encoder
reads, the child exports it to a real receiver on 127.0.0.1, a child that dies is replaced, and
a shut-down exporter ends its child after its last batch."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace import set_span_in_context as in_context

from ai_gateway.observability.span_export import ProcessSpanExporter, span_fields, span_of
from tests.e2e.test_ledger_crash import ends
from tests.observability.otlp_receiver import otlp_receiver

RESOURCE = Resource.create({SERVICE_NAME: "gateway-under-test"})
CALLER = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "value")]),
)
"""A caller's span, in whose trace (with its trace state) the gateway's request span starts."""


class Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: object) -> SpanExportResult:
        self.spans.extend(spans)  # type: ignore[call-overload]
        return SpanExportResult.SUCCESS


def two_spans() -> list[ReadableSpan]:
    """A SERVER span (in a caller's trace, with its trace state) and its CLIENT child, as the
    gateway makes them: attributes of every kind, an error status, an event."""
    kept = Kept()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("ai_gateway", "1.2.3", schema_url="https://example.test/1")
    server = tracer.start_span(
        "chat cerebras/gpt-oss-120b",
        context=in_context(NonRecordingSpan(CALLER)),
        kind=SpanKind.SERVER,
        attributes={"http.response.status_code": 502, "ai_gateway.stream": True},
    )
    client = tracer.start_span(
        "chat gpt-oss-120b",
        context=in_context(server),
        kind=SpanKind.CLIENT,
        attributes={"ai_gateway.cost_usd": 0.25, "gen_ai.response.finish_reasons": ("stop",)},
    )
    client.add_event("retry", {"attempt": 2})
    client.set_status(Status(StatusCode.ERROR, "upstream_error"))
    client.end()
    server.end()
    provider.shutdown()
    return kept.spans


def wait_until_ended(pid: int) -> None:
    """Until `pid` is a zombie (its parent, this process, has not reaped it yet)."""
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.01)


def test_a_span_crosses_the_pipe_with_all_the_encoder_reads() -> None:
    spans = two_spans()

    rebuilt = [span_of(span_fields(span), RESOURCE, {}) for span in spans]

    assert encode_spans(rebuilt).SerializeToString() == encode_spans(spans).SerializeToString()
    client, server = rebuilt  # ended in that order
    assert server.parent is not None
    assert server.parent.is_remote  # the caller's span
    assert server.context is not None
    assert server.context.trace_state == TraceState([("vendor", "value")])
    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    assert client.events[0].attributes == {"attempt": 2}


def test_what_a_span_had_to_drop_is_carried_across() -> None:
    kept = Kept()
    provider = TracerProvider(
        resource=RESOURCE, span_limits=SpanLimits(max_span_attributes=2, max_events=1)
    )
    provider.add_span_processor(SimpleSpanProcessor(kept))
    span = provider.get_tracer("ai_gateway").start_span("chat", attributes={"a": 1, "b": 2})
    span.set_attribute("c", 3)
    span.add_event("one")
    span.add_event("two")
    span.end()
    (original,) = kept.spans

    rebuilt = span_of(span_fields(original), RESOURCE, {})

    assert (rebuilt.dropped_attributes, rebuilt.dropped_events) == (1, 1)
    assert (
        encode_spans([rebuilt]).SerializeToString() == encode_spans(kept.spans).SerializeToString()
    )


def test_the_child_exports_to_the_endpoint_is_replaced_when_it_dies_and_ends_at_shutdown() -> None:
    with otlp_receiver() as (endpoint, receiver):
        exporter = ProcessSpanExporter(
            f"{endpoint}/v1/traces", service_name="gw-test", log_level="info", log_format="json"
        )
        try:
            assert exporter.export(two_spans()) is SpanExportResult.SUCCESS
            received = receiver.wait_for(2)
            assert {span.service_name for span in received} == {"gw-test"}
            assert sorted(span.name for span in received) == [
                "chat cerebras/gpt-oss-120b",
                "chat gpt-oss-120b",
            ]
            first = exporter.pid
            assert first is not None
            assert os.getsid(first) != os.getsid(0)  # a Ctrl-C in a terminal does not reach it
            os.kill(first, signal.SIGTERM)  # nor does a service manager's signal to the group
            assert exporter.export(two_spans()) is SpanExportResult.SUCCESS
            receiver.wait_for(4)
            assert exporter.pid == first

            os.kill(first, signal.SIGKILL)
            wait_until_ended(first)
            assert exporter.export(two_spans()) is SpanExportResult.SUCCESS
            assert exporter.pid not in (None, first)
            receiver.wait_for(6)
            second = exporter.pid
        finally:
            exporter.shutdown()

    assert exporter.pid is None
    assert exporter.export(two_spans()) is SpanExportResult.FAILURE  # after shutdown
    assert second is not None
    try:
        os.kill(second, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError("the child outlived its exporter's shutdown")


def test_the_child_ends_when_its_gateway_is_killed() -> None:
    code = (
        "import sys, time\n"
        "from ai_gateway.observability.span_export import ProcessSpanExporter\n"
        "from tests.observability.test_span_export import two_spans\n"
        "exporter = ProcessSpanExporter(sys.argv[1], service_name='gw', log_level='info',"
        " log_format='json')\n"
        "exporter.export(two_spans())\n"
        "print(exporter.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    with otlp_receiver() as (endpoint, receiver):
        with subprocess.Popen(  # noqa: S603  # this interpreter, our own code
            [sys.executable, "-c", code, f"{endpoint}/v1/traces"],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],  # the repository: `tests` importable
        ) as gateway:
            try:
                assert gateway.stdout is not None
                child = int(gateway.stdout.readline())
                receiver.wait_for(2)
            finally:
                gateway.kill()
        assert ends(child), "the span exporter's child outlived its gateway"


def test_a_helper_process_started_by_hand_says_it_is_the_gateway_s() -> None:
    for module in ("ai_gateway.usage.writer", "ai_gateway.observability.span_export"):
        done = subprocess.run(  # noqa: S603  # this interpreter, our own module
            [sys.executable, "-m", module],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1
        assert done.stderr.decode().strip() == f"{module} is started by the gateway, not by hand"
