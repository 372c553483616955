"""Spans made from the SDK's parts without its tracer: the provider's sampler, id generator and
resource decide and name each span as `Tracer.start_span` would, the gateway fills in a plain
`OpenSpan`, and a finished span goes to the SDK's batch processor as a `ReadableSpan`.

Why not the SDK's tracer: its recording span (a lock, validated attributes, a processor call at
start and at end) cost the serving thread about 115 µs of CPU per traced request (two spans),
most of tracing's cost in throughput. The gateway's spans are few and their attributes a fixed
set of typed values, so the checks buy nothing here; what a span holds is decided once, when it
ends. What the SDK would do and this does too: the sampler's decision, attributes and trace state
(asked once per request: an attempt's span follows its request's, as the default parent-based
sampler would decide), random ids and the W3C random-trace-id flag, and the span limits of the
OTEL_SPAN_ATTRIBUTE_* / OTEL_ATTRIBUTE_* variables (applied by the SDK's own bounded attributes
when a limit is set that could cut something: a value length, or a count under what the span
holds).
"""

import time
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, TraceFlags, TraceState
from opentelemetry.util.types import Attributes, AttributeValue

UNSET = Status()


@dataclass(slots=True)
class OpenSpan:
    """A span being described: its identity is fixed when it starts, the rest until it ends
    (not after: the batch processor's thread reads its attributes)."""

    name: str
    context: SpanContext
    parent: SpanContext | None
    kind: SpanKind
    attributes: dict[str, AttributeValue]
    start_ns: int = field(default_factory=time.time_ns)
    status: Status = UNSET


class SpanMaker:
    """Starts spans (sampled ones only) and hands finished ones to `processor`."""

    def __init__(
        self, provider: TracerProvider, processor: SpanProcessor, scope: InstrumentationScope
    ) -> None:
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.resource = provider.resource
        self.processor = processor
        self.scope = scope
        limits = SpanLimits()  # from the environment, as the provider's own
        self.max_attributes = limits.max_span_attributes
        self.max_text = limits.max_span_attribute_length

    def root(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        parent: Context | None = None,
    ) -> OpenSpan | None:
        """A request's span, in `parent`'s trace when it holds a valid span context (a
        caller's), else in a new trace; None when the sampler leaves it out."""
        caller = trace.get_current_span(parent).get_span_context()
        parent_context: SpanContext | None = None
        if caller.is_valid:
            parent_context, trace_id = caller, caller.trace_id
            is_random = caller.trace_flags.random_trace_id
        else:
            trace_id, is_random = self.ids.generate_trace_id(), self.ids.is_trace_id_random()
        sampling = self.sampler.should_sample(parent, trace_id, name, kind, attributes)
        if not sampling.decision.is_sampled():  # type: ignore[no-untyped-call]  # untyped upstream
            return None
        flags = TraceFlags.SAMPLED | (TraceFlags.RANDOM_TRACE_ID if is_random else 0)
        context = self._context(trace_id, TraceFlags(flags), sampling.trace_state)
        return OpenSpan(name, context, parent_context, kind, dict(sampling.attributes or {}))

    def child(
        self, parent: OpenSpan, name: str, kind: SpanKind, attributes: dict[str, AttributeValue]
    ) -> OpenSpan:
        """A span under `parent`, in its trace and sampled as it is."""
        known = parent.context
        context = self._context(known.trace_id, known.trace_flags, known.trace_state)
        return OpenSpan(name, context, known, kind, attributes)

    def _context(self, trace_id: int, flags: TraceFlags, state: TraceState | None) -> SpanContext:
        """A new span's identity in trace `trace_id`."""
        span_id = self.ids.generate_span_id()
        return SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags, trace_state=state)

    def end(self, span: OpenSpan) -> None:
        """Hand the finished span to the batch processor."""
        attributes: Attributes = span.attributes
        too_many = self.max_attributes is not None and len(span.attributes) > self.max_attributes
        if self.max_text is not None or too_many:  # the SDK's own cut, and its dropped count
            attributes = BoundedAttributes(
                self.max_attributes, span.attributes, max_value_len=self.max_text
            )
        finished = ReadableSpan(
            span.name,
            context=span.context,
            parent=span.parent,
            resource=self.resource,
            attributes=attributes,
            kind=span.kind,
            status=span.status,
            start_time=span.start_ns,
            end_time=time.time_ns(),
            instrumentation_scope=self.scope,
        )
        self.processor.on_end(finished)
