"""Traces over OTLP (HTTP/protobuf), built only when an OTLP endpoint is set: a SERVER span per
request (in the caller's trace when it sends a W3C `traceparent`) and a CLIENT span per upstream
attempt, its child through the OpenTelemetry context (hedged attempts start in the request's
task, so their spans have the same parent). Spans carry the GenAI semantic conventions'
attributes; prompt and completion text only when OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
is on.

Spans: https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/
"""

import asyncio
from contextvars import Token
from typing import Any

import orjson
from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ai_gateway import __version__
from ai_gateway.api.record import CLIENT_CLOSED_STATUS, RequestRecord
from ai_gateway.config.settings import Settings
from ai_gateway.observability.labels import CANCELLED, ErrorTypes
from ai_gateway.observability.observer import Headers
from ai_gateway.observability.span_export import ProcessSpanExporter
from ai_gateway.routing.attempts import AttemptKind, AttemptWatch, AttemptWatcher
from ai_gateway.routing.route import Deployment, Route
from ai_gateway.routing.router import OpenedStream
from ai_gateway.schemas import ChatCompletionRequest, ChatCompletionResponse, Usage

CHAT = "chat"
TRACE_HEADERS = (b"traceparent", b"tracestate")
PROPAGATOR = TraceContextTextMapPropagator()


def tracer_provider(settings: Settings, endpoint: str) -> TracerProvider:
    """The SDK's provider exporting in batches to `endpoint`, through a process of its own
    (observability/span_export.py; the sampler, batch sizes, headers and timeouts come from the
    standard OTEL_* variables, read by the SDK itself)."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    exporter = ProcessSpanExporter(
        endpoint,
        service_name=settings.otel_service_name,
        log_level=settings.log_level,
        log_format=settings.log_format,
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def set_usage(span: Span, usage: Usage | None) -> None:
    """Token counts on a span."""
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)


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


class TracingObserver:
    """A SERVER span for every request, made current for the request's task (so the router's
    attempt spans are its children) and ended with what the request's record holds."""

    def __init__(self, tracer: Tracer, *, errors: ErrorTypes, capture_content: bool) -> None:
        self.tracer = tracer
        self.errors = errors
        self.capture_content = capture_content
        self._tokens: dict[int, Token[Context]] = {}

    def started(self, record: RequestRecord, headers: Headers) -> None:
        """Open the request's span, in the caller's trace when it sent a valid `traceparent`,
        and make it current (a request the sampler leaves out gets no more: its attempts are
        not traced either)."""
        span = self.tracer.start_span(
            record.method,
            context=caller_context(headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": record.method,
                "url.path": record.path,
                "ai_gateway.request_id": record.request_id,
            },
        )
        if not span.is_recording():  # sampled out: nothing to describe or to make current
            return  # (if upstream calls ever carry `traceparent`, this one must carry it too)
        record.span = span
        if self.capture_content:
            record.streamed_text = {}  # filled only if the answer is a stream
        self._tokens[id(record)] = context.attach(trace.set_span_in_context(span))

    def finished(self, record: RequestRecord) -> None:
        """Describe the request on its span and end it."""
        token = self._tokens.pop(id(record), None)
        if token is not None:
            context.detach(token)
        span = record.span
        if not isinstance(span, Span):  # sampled out
            return
        status = CLIENT_CLOSED_STATUS if record.is_client_closed else record.status
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if record.route is not None:
            self._describe_chat(span, record)
        error_type = self.errors.of_record(record)
        if error_type:
            span.set_attribute("error.type", error_type)
            if is_server_error(record):
                span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()

    @staticmethod
    def _describe_chat(span: Span, record: RequestRecord) -> None:
        """The GenAI attributes of a chat request."""
        span.update_name(f"{CHAT} {record.route}")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": CHAT,
            "gen_ai.request.model": record.route,
            "ai_gateway.stream": record.is_stream,
        }
        optional = {
            "gen_ai.provider.name": record.provider,
            "gen_ai.response.model": record.model,
            "ai_gateway.attempts": record.attempts,
            "ai_gateway.cost_usd": record.cost_usd,
            "ai_gateway.key_id": record.caller.key_id if record.caller else None,
            "ai_gateway.team": record.caller.team if record.caller else None,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        span.set_attributes(attributes)
        set_usage(span, record.usage)
        if record.streamed_text:  # a stream's answer, when content is captured
            messages = [
                {"role": "assistant", "content": "".join(record.streamed_text[index])}
                for index in sorted(record.streamed_text)
            ]
            span.set_attribute("gen_ai.output.messages", orjson.dumps(messages).decode())


class AttemptTracer:
    """A CLIENT span per upstream attempt, around whatever else watches attempts (metrics)."""

    def __init__(
        self,
        tracer: Tracer,
        inner: AttemptWatcher,
        *,
        errors: ErrorTypes,
        capture_content: bool,
    ) -> None:
        self.tracer = tracer
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
        """Open the attempt's span under the current (request) span; none under a request
        that was sampled out (the default sampler follows the parent)."""
        inner = self.inner.started(route, deployment, request, kind)
        if not trace.get_current_span().is_recording():
            return inner
        span = self.tracer.start_span(
            f"{CHAT} {deployment.model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": CHAT,
                "gen_ai.provider.name": deployment.provider.name,
                "gen_ai.request.model": deployment.model,
                "ai_gateway.route": route.name,
                "ai_gateway.deployment": deployment.key,
                "ai_gateway.attempt.kind": kind.value,
            },
        )
        if self.capture_content and request is not None:
            span.set_attribute("gen_ai.input.messages", bytes(request.messages).decode())
        return TracedAttempt(span, inner, self)


class TracedAttempt:
    """One attempt's span, ended when the attempt ends."""

    __slots__ = ("inner", "owner", "span")

    def __init__(self, span: Span, inner: AttemptWatch, owner: AttemptTracer) -> None:
        self.span = span
        self.inner = inner
        self.owner = owner

    def succeeded(self, value: object) -> None:
        """The response model and usage of the answer (and its text, when captured)."""
        self.inner.succeeded(value)
        span = self.span
        if isinstance(value, ChatCompletionResponse):
            model = value.data.get("model")
            set_usage(span, value.usage)
            if self.owner.capture_content:
                messages = [choice.get("message") for choice in value.data.get("choices", ())]
                span.set_attribute("gen_ai.output.messages", orjson.dumps(messages).decode())
        elif isinstance(value, OpenedStream) and value.first:
            model = value.first[0].data.get("model")
        else:
            model = None
        if isinstance(model, str):
            span.set_attribute("gen_ai.response.model", model)
        span.end()

    def failed(self, error: BaseException) -> None:
        """The error's type; a cancelled attempt (a hedge loser) is no error."""
        self.inner.failed(error)
        span = self.span
        if isinstance(error, asyncio.CancelledError):
            span.set_attribute("ai_gateway.attempt.outcome", CANCELLED)
        else:
            error_type = self.owner.errors.of_error(error)
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()


def build_tracing(
    settings: Settings, endpoint: str, inner: AttemptWatcher, *, errors: ErrorTypes
) -> tuple[TracingObserver, AttemptTracer, TracerProvider]:
    """The request observer and the attempt watcher (around `inner`), exporting to `endpoint`,
    and their provider."""
    provider = tracer_provider(settings, endpoint)
    tracer = provider.get_tracer("ai_gateway", __version__)
    capture_content = settings.otel_instrumentation_genai_capture_message_content
    return (
        TracingObserver(tracer, errors=errors, capture_content=capture_content),
        AttemptTracer(tracer, inner, errors=errors, capture_content=capture_content),
        provider,
    )
