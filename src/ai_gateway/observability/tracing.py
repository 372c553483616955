"""Traces over OTLP (HTTP/protobuf), built only when an OTLP endpoint is set: a SERVER span per
request (in the caller's trace when it sends a W3C `traceparent`) and a CLIENT span per upstream
attempt, its child (hedged attempts start in the request's task, so their spans have the same
parent). Spans carry the GenAI semantic conventions' attributes; prompt and completion text only
when OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is on. The spans are made from the SDK's
parts without its tracer (observability/span_maker.py says why) and exported by the SDK's batch
processor and OTLP exporter in a process of their own (observability/span_export.py).

Spans: https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/
"""

import asyncio
from contextvars import ContextVar

import orjson
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from ai_gateway import __version__
from ai_gateway.api.record import CLIENT_CLOSED_STATUS, RequestRecord
from ai_gateway.config.settings import Settings
from ai_gateway.observability.labels import CANCELLED, ErrorTypes
from ai_gateway.observability.observer import Headers
from ai_gateway.observability.span_export import ProcessSpanExporter
from ai_gateway.observability.span_maker import OpenSpan, SpanMaker
from ai_gateway.routing.attempts import AttemptKind, AttemptWatch, AttemptWatcher
from ai_gateway.routing.route import Deployment, Route
from ai_gateway.routing.router import OpenedStream
from ai_gateway.schemas import ChatCompletionRequest, ChatCompletionResponse, Usage

CHAT = "chat"
TRACE_HEADERS = (b"traceparent", b"tracestate")
PROPAGATOR = TraceContextTextMapPropagator()


def span_pipeline(settings: Settings, endpoint: str) -> tuple[SpanMaker, TracerProvider]:
    """Spans exported in batches to `endpoint`, through a process of its own
    (observability/span_export.py; the sampler, batch sizes, headers and timeouts come from the
    standard OTEL_* variables, read by the SDK itself), and the SDK's provider that holds their
    batch processor (it shuts it down at exit)."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    exporter = ProcessSpanExporter(
        endpoint,
        service_name=settings.otel_service_name,
        log_level=settings.log_level,
        log_format=settings.log_format,
    )
    processor = BatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
    scope = InstrumentationScope("ai_gateway", __version__)
    return SpanMaker(provider, processor, scope), provider


def set_usage(attributes: dict[str, AttributeValue], usage: Usage | None) -> None:
    """Token counts among a span's attributes."""
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens


def is_server_error(record: RequestRecord) -> bool:
    """A 5xx, no response at all, or a stream that failed after its 200 (a 4xx is the
    caller's, and a caller who left is no server error)."""
    status = record.status
    if status is None:
        return not record.is_client_closed
    return status >= 500 or (status < 400 and record.error_code is not None)


def caller_context(headers: Headers) -> Context | None:
    """The caller's trace (W3C `traceparent` and `tracestate`), or None: a new trace. A header
    the propagator cannot read starts a new trace too."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in TRACE_HEADERS
    }
    return PROPAGATOR.extract(carrier) if carrier else None


REQUEST_SPAN: ContextVar[OpenSpan | None] = ContextVar("request_span", default=None)
"""The request's span while it runs, for its attempts' spans (every attempt, hedges too, starts
in the request's task). Set in that task's own context: it ends with the task."""


class TracingObserver:
    """A SERVER span for every sampled request, current for the request's task (so the router's
    attempt spans are its children) and ended with what the request's record holds."""

    def __init__(self, spans: SpanMaker, *, errors: ErrorTypes, capture_content: bool) -> None:
        self.spans = spans
        self.errors = errors
        self.capture_content = capture_content

    def started(self, record: RequestRecord, headers: Headers) -> None:
        """Open the request's span, in the caller's trace when it sent a valid `traceparent`
        (a request the sampler leaves out gets no more: its attempts are not traced either)."""
        span = self.spans.root(
            record.method,
            SpanKind.SERVER,
            {
                "http.request.method": record.method,
                "url.path": record.path,
                "ai_gateway.request_id": record.request_id,
            },
            caller_context(headers),
        )
        if span is None:  # sampled out: nothing to describe or to make current
            return  # (if upstream calls ever carry `traceparent`, this one must carry it too)
        record.span = span
        if self.capture_content:
            record.streamed_text = {}  # filled only if the answer is a stream
        REQUEST_SPAN.set(span)

    def finished(self, record: RequestRecord) -> None:
        """Describe the request on its span and end it."""
        span = record.span
        if not isinstance(span, OpenSpan):  # sampled out
            return
        REQUEST_SPAN.set(None)  # (in the request's task, as `started`: nothing else sees it)
        attributes = span.attributes
        status = CLIENT_CLOSED_STATUS if record.is_client_closed else record.status
        if status is not None:
            attributes["http.response.status_code"] = status
        if record.route is not None:
            self._describe_chat(span, record)
        error_type = self.errors.of_record(record)
        if error_type:
            attributes["error.type"] = error_type
            if is_server_error(record):
                span.status = Status(StatusCode.ERROR, error_type)
        self.spans.end(span)

    def _describe_chat(self, span: OpenSpan, record: RequestRecord) -> None:
        """The GenAI attributes of a chat request."""
        span.name = f"{CHAT} {record.route}"
        attributes = span.attributes
        attributes["gen_ai.operation.name"] = CHAT
        attributes["gen_ai.request.model"] = record.route
        attributes["ai_gateway.stream"] = record.is_stream
        caller = record.caller
        optional = {
            "gen_ai.provider.name": record.provider,
            "gen_ai.response.model": record.model,
            "ai_gateway.attempts": record.attempts,
            "ai_gateway.cost_usd": record.cost_usd,
            "ai_gateway.key_id": caller.key_id if caller else None,
            "ai_gateway.team": caller.team if caller else None,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        set_usage(attributes, record.usage)
        if record.streamed_text:  # a stream's answer, when content is captured
            messages = [
                {"role": "assistant", "content": "".join(record.streamed_text[index])}
                for index in sorted(record.streamed_text)
            ]
            attributes["gen_ai.output.messages"] = orjson.dumps(messages).decode()


class AttemptTracer:
    """A CLIENT span per upstream attempt, around whatever else watches attempts (metrics)."""

    def __init__(
        self,
        spans: SpanMaker,
        inner: AttemptWatcher,
        *,
        errors: ErrorTypes,
        capture_content: bool,
    ) -> None:
        self.spans = spans
        self.inner = inner
        self.errors = errors
        self.capture_content = capture_content

    def started(
        self,
        route: Route,
        deployment: Deployment,
        request: ChatCompletionRequest | None,
        kind: AttemptKind,
    ) -> AttemptWatch:
        """Open the attempt's span under the request's; none under a request that was sampled
        out."""
        inner = self.inner.started(route, deployment, request, kind)
        parent = REQUEST_SPAN.get()
        if parent is None:
            return inner
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": CHAT,
            "gen_ai.provider.name": deployment.provider.name,
            "gen_ai.request.model": deployment.model,
            "ai_gateway.route": route.name,
            "ai_gateway.deployment": deployment.key,
            "ai_gateway.attempt.kind": kind.value,
        }
        if self.capture_content and request is not None:
            attributes["gen_ai.input.messages"] = bytes(request.messages).decode()
        span = self.spans.child(parent, f"{CHAT} {deployment.model}", SpanKind.CLIENT, attributes)
        return TracedAttempt(span, inner, self)


class TracedAttempt:
    """One attempt's span, ended when the attempt ends."""

    __slots__ = ("inner", "owner", "span")

    def __init__(self, span: OpenSpan, inner: AttemptWatch, owner: AttemptTracer) -> None:
        self.span = span
        self.inner = inner
        self.owner = owner

    def succeeded(self, value: object) -> None:
        """The response model and usage of the answer (and its text, when captured)."""
        self.inner.succeeded(value)
        attributes = self.span.attributes
        if isinstance(value, ChatCompletionResponse):
            model = value.data.get("model")
            set_usage(attributes, value.usage)
            if self.owner.capture_content:
                messages = [choice.get("message") for choice in value.data.get("choices", ())]
                attributes["gen_ai.output.messages"] = orjson.dumps(messages).decode()
        elif isinstance(value, OpenedStream) and value.first:
            model = value.first[0].data.get("model")
        else:
            model = None
        if isinstance(model, str):
            attributes["gen_ai.response.model"] = model
        self.owner.spans.end(self.span)

    def failed(self, error: BaseException) -> None:
        """The error's type; a cancelled attempt (a hedge loser) is no error."""
        self.inner.failed(error)
        span = self.span
        if isinstance(error, asyncio.CancelledError):
            span.attributes["ai_gateway.attempt.outcome"] = CANCELLED
        else:
            error_type = self.owner.errors.of_error(error)
            span.attributes["error.type"] = error_type
            span.status = Status(StatusCode.ERROR, error_type)
        self.owner.spans.end(span)


def build_tracing(
    settings: Settings, endpoint: str, inner: AttemptWatcher, *, errors: ErrorTypes
) -> tuple[TracingObserver, AttemptTracer, TracerProvider]:
    """The request observer and the attempt watcher (around `inner`), exporting to `endpoint`,
    and their provider."""
    spans, provider = span_pipeline(settings, endpoint)
    capture_content = settings.otel_instrumentation_genai_capture_message_content
    return (
        TracingObserver(spans, errors=errors, capture_content=capture_content),
        AttemptTracer(spans, inner, errors=errors, capture_content=capture_content),
        provider,
    )
