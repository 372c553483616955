"""Spans made from the SDK's parts: what the SDK's own tracer would make (its sampler's
decision, ids, flags, trace state, parent, resource and scope), field for field."""

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
)
from opentelemetry.trace import set_span_in_context as in_context
from opentelemetry.util.types import AttributeValue

from ai_gateway.observability.span_export import span_fields
from ai_gateway.observability.span_maker import OpenSpan, SpanMaker
from tests.observability.test_span_export import CALLER, RESOURCE, Kept

SCOPE = InstrumentationScope("ai_gateway", "1.2.3")


class Counting(IdGenerator):
    """Ids 1, 2, 3... (trace ids from 0x100), the same for any two makers started alike."""

    def __init__(self) -> None:
        self.last = 0

    def generate_span_id(self) -> int:
        self.last += 1
        return self.last

    def generate_trace_id(self) -> int:
        self.last += 1
        return 0x100 + self.last


def provider(**options: object) -> tuple[TracerProvider, Kept]:
    kept = Kept()
    made = TracerProvider(resource=RESOURCE, id_generator=Counting(), **options)  # type: ignore[arg-type]
    made.add_span_processor(SimpleSpanProcessor(kept))
    return made, kept


def maker(**options: object) -> tuple[SpanMaker, Kept]:
    made, kept = provider(**options)
    return SpanMaker(made, SimpleSpanProcessor(kept), SCOPE), kept


def without_times(span: ReadableSpan) -> list[object]:
    fields = span_fields(span)
    return fields[:8] + fields[10:]


@pytest.mark.parametrize("caller", [None, CALLER])
def test_a_request_and_its_attempt_are_the_spans_the_sdk_s_tracer_makes(
    caller: SpanContext | None,
) -> None:
    parent = None if caller is None else in_context(NonRecordingSpan(caller))
    attributes: dict[str, AttributeValue] = {
        "url.path": "/v1/chat/completions",
        "ai_gateway.attempts": 2,
    }
    sdk, by_sdk = provider()
    tracer = sdk.get_tracer(SCOPE.name, SCOPE.version)
    server = tracer.start_span("POST", parent, SpanKind.SERVER, dict(attributes))
    attempt = tracer.start_span(
        "chat m", in_context(server), SpanKind.CLIENT, {"gen_ai.request.model": "m"}
    )
    attempt.set_status(Status(StatusCode.ERROR, "upstream_error"))
    attempt.end()
    server.set_attribute("http.response.status_code", 200)
    server.end()

    spans, made = maker()
    request = spans.root("POST", SpanKind.SERVER, dict(attributes), parent)
    assert request is not None
    child = spans.child(request, "chat m", SpanKind.CLIENT, {"gen_ai.request.model": "m"})
    child.status = Status(StatusCode.ERROR, "upstream_error")
    spans.end(child)
    request.attributes["http.response.status_code"] = 200
    spans.end(request)

    assert [without_times(s) for s in made.spans] == [without_times(s) for s in by_sdk.spans]
    for span in made.spans:
        assert span.start_time is not None
        assert span.end_time is not None
        assert 0 <= span.end_time - span.start_time < 10**9
        assert span.resource is RESOURCE


def test_what_the_sampler_leaves_out_is_no_span() -> None:
    spans, _ = maker(sampler=ALWAYS_OFF)
    assert spans.root("POST", SpanKind.SERVER, {}) is None
    spans, _ = maker(sampler=ParentBased(TraceIdRatioBased(1.0)))
    unsampled = SpanContext(CALLER.trace_id, CALLER.span_id, is_remote=True)
    assert spans.root("POST", SpanKind.SERVER, {}, in_context(NonRecordingSpan(unsampled))) is None
    sampled = spans.root("POST", SpanKind.SERVER, {}, in_context(NonRecordingSpan(CALLER)))
    assert sampled is not None
    assert sampled.context.trace_id == CALLER.trace_id
    assert sampled.context.trace_state == CALLER.trace_state


def test_the_span_limits_cut_as_the_sdk_s_would(monkeypatch: pytest.MonkeyPatch) -> None:
    attributes: dict[str, AttributeValue] = {"a": "x" * 100, "b": 1, "c": "longer text", "d": True}
    spans, made = maker()
    spans.end(spans.child(root(spans), "chat m", SpanKind.CLIENT, dict(attributes)))
    assert made.spans[0].attributes == attributes
    assert made.spans[0].dropped_attributes == 0

    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "6")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3")
    sdk, by_sdk = provider()
    sdk.get_tracer("t").start_span("chat m", attributes=dict(attributes)).end()
    spans, made = maker()
    spans.end(spans.child(root(spans), "chat m", SpanKind.CLIENT, dict(attributes)))
    assert dict(made.spans[0].attributes or {}) == dict(by_sdk.spans[0].attributes or {})
    assert dict(made.spans[0].attributes or {}) == {"b": 1, "c": "longer", "d": True}
    assert made.spans[0].dropped_attributes == by_sdk.spans[0].dropped_attributes == 1


def root(spans: SpanMaker) -> OpenSpan:
    made = spans.root("POST", SpanKind.SERVER, {})
    assert made is not None
    return made


def test_a_new_trace_s_random_id_is_flagged_as_the_sdk_flags_it() -> None:
    spans = SpanMaker(TracerProvider(resource=RESOURCE), SimpleSpanProcessor(Kept()), SCOPE)
    request = spans.root("POST", SpanKind.SERVER, {})
    assert request is not None
    assert request.context.trace_flags.random_trace_id
    assert request.context.trace_flags.sampled
    assert spans.child(request, "chat m", SpanKind.CLIENT, {}).context.trace_flags.random_trace_id
