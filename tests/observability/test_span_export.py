"""The span exporter's child process: a span crosses the pipe with everything the OTLP encoder
reads, the child exports it to a real receiver on 127.0.0.1, a child that dies is replaced, and
a shut-down exporter ends its child after its last batch."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
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
from opentelemetry.util.types import AttributeValue

from ai_gateway.observability.span_encoder import ATTRIBUTES_KEPT, KEPT_TEXT_CHARS, SpanEncoder
from ai_gateway.observability.span_export import ProcessSpanExporter, batch_line, span_fields
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


def encoded(spans: list[ReadableSpan], encoder: SpanEncoder | None = None) -> bytes:
    """What the child posts for `spans`, from the fields that cross the pipe (a JSON line)."""
    batch = orjson.loads(batch_line(spans))
    return bytes((encoder or SpanEncoder(RESOURCE)).request(batch).SerializeToString())


def chat_span(attributes: dict[str, AttributeValue]) -> ReadableSpan:
    """A finished span with `attributes`, in a caller's trace."""
    return ReadableSpan("chat", two_spans()[0].context, resource=RESOURCE, attributes=attributes)


def spans_in(request: bytes) -> list[Any]:
    """The spans of an export request of one resource and one scope."""
    return list(
        ExportTraceServiceRequest.FromString(request).resource_spans[0].scope_spans[0].spans
    )


def test_the_child_encodes_what_crosses_the_pipe_as_the_sdk_encodes_the_spans() -> None:
    spans = two_spans()  # (a remote parent with its trace state, an event, an error, a list)
    encoder = SpanEncoder(RESOURCE)

    first = encoded(spans, encoder)

    assert first == encode_spans(spans).SerializeToString()
    assert encoded(spans, encoder) == first  # its attributes, now reused, encode the same
    (client, server) = spans_in(first)  # ended in that order
    assert client.parent_span_id == server.span_id
    assert server.trace_state == "vendor=value"


def test_values_of_every_kind_and_spans_without_a_scope_encode_as_the_sdk_encodes_them() -> None:
    kept = Kept()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(kept))
    values: dict[str, AttributeValue] = {
        "s": "text",
        "i": -7,
        "f": 1.5,
        "b": False,
        "one": 1,
        "true": True,
        "ints": (1, 2),
    }
    for tracer in (
        provider.get_tracer("a"),
        provider.get_tracer("b", "2"),
        provider.get_tracer(""),
    ):
        tracer.start_span("chat", attributes=values).end()
    span = provider.get_tracer("a").start_span("bare")
    span.end()
    provider.shutdown()
    scopeless = ReadableSpan("scopeless", kept.spans[0].context, resource=RESOURCE)

    spans = [*kept.spans, scopeless]
    assert encoded(spans) == encode_spans(spans).SerializeToString()


def test_the_encoder_keeps_a_bounded_number_of_attributes() -> None:
    encoder = SpanEncoder(RESOURCE)
    for number in range(ATTRIBUTES_KEPT + 10):  # a value unique to each request, and one not
        attributes = {"ai_gateway.request_id": f"req_{number}", "gen_ai.operation.name": "chat"}
        spans = [chat_span(attributes)]
        assert encoded(spans, encoder) == encode_spans(spans).SerializeToString()
    assert encoder.attributes_kept <= ATTRIBUTES_KEPT


def test_what_is_kept_for_reuse_and_what_cannot_be_encoded_encode_as_the_sdk_encodes_them() -> None:
    encoder = SpanEncoder(RESOURCE)
    for attributes in (
        {"cost": 0.0, "text": "a" * (KEPT_TEXT_CHARS + 1)},
        {"cost": -0.0, "text": "a" * (KEPT_TEXT_CHARS + 1), "too_big": 2**64},  # (logged)
    ):
        spans = [chat_span(attributes)]
        fields = [span_fields(span) for span in spans]  # (not through the pipe: see below)
        assert (
            encoder.request(fields).SerializeToString() == encode_spans(spans).SerializeToString()
        )
    assert encoder.attributes_kept == 1  # the integer (as nothing): neither float nor long text


def test_an_integer_past_64_bits_crosses_the_pipe_as_a_float() -> None:
    (span,) = spans_in(encoded([chat_span({"tokens": 2**64})]))

    assert span.attributes[0].value.double_value == float(2**64)


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

    assert encoded(kept.spans) == encode_spans(kept.spans).SerializeToString()
    (span_message,) = spans_in(encoded(kept.spans))
    assert (span_message.dropped_attributes_count, span_message.dropped_events_count) == (1, 1)


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
