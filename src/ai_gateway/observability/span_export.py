"""ProcessSpanExporter: the spans' OTLP encoding and export, in a process of its own.

The OpenTelemetry SDK's OTLP/HTTP exporter encodes each span into protobuf in Python (about
40 µs per span here, two spans per traced request) and posts the batches with `requests`, on
the batch processor's thread of the serving process: with every request traced, that thread took
about 100 µs of CPU per request, and the interpreter lock with it (about a third of the tracing's
cost in throughput). So the batch processor hands its batches to this exporter instead, which
writes each span's fields as one JSON array (a few µs) to a child process
(`python -m ai_gateway.observability.span_export`, started with the first batch); the child
rebuilds the spans and exports them with the SDK's own OTLP exporter, which reads the standard
`OTEL_EXPORTER_OTLP_*` variables there as it would here (the child inherits the environment).

Bounds: the batch processor's own (a queue of 2,048 spans by default; spans past it are
dropped and counted by the SDK); a child that falls behind fills its pipe, and the processor's
thread then waits, so its queue fills. The child runs in a session of its own and ignores
SIGINT and SIGTERM (a Ctrl-C in a terminal, or a service manager signalling the whole group, is
the gateway's to handle), logs to the gateway's standard error, and ends at the end of its
input: when the gateway shuts the exporter down (at exit, the SDK's own hook: the batch
processor's last batches, then up to SHUTDOWN_TIMEOUT_S for the child to export them, after
which it is killed) or dies. A child that died is replaced at the next batch; the batch it had
is lost, as an unreachable endpoint loses it.
"""

import contextlib
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from ai_gateway.collector import tune_collector
from ai_gateway.helper_process import command, greeted, hello

MODULE = "ai_gateway.observability.span_export"
"""This module, as its helper process runs it (`python -m`: its `__name__` is then `__main__`)."""

SHUTDOWN_TIMEOUT_S = 10.0
"""How long a shutdown waits for the child to export its last spans before killing it."""


def span_fields(span: ReadableSpan) -> list[Any]:
    """What the OTLP encoder reads of a span, as JSON values (ids as hex: a trace id does not
    fit JSON's integers)."""
    context, parent, scope = span.context, span.parent, span.instrumentation_scope
    if context is None:
        raise ValueError("a span without a context cannot be exported")
    return [
        span.name,
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
        int(context.trace_flags),
        list(context.trace_state.items()),
        None if parent is None else f"{parent.span_id:016x}",
        parent is not None and parent.is_remote,
        span.kind.value,
        span.start_time,
        span.end_time,
        span.status.status_code.value,
        span.status.description,
        dict(span.attributes or {}),
        [[event.name, event.timestamp, dict(event.attributes or {})] for event in span.events],
        None if scope is None else [scope.name, scope.version, scope.schema_url],
        [span.dropped_attributes, span.dropped_events, span.dropped_links],
    ]


Scopes = dict[tuple[str, str | None, str | None], InstrumentationScope]


def span_of(fields: list[Any], resource: Resource, scopes: Scopes) -> ReadableSpan:
    """The span `span_fields` described (its scope kept in `scopes`, one object per scope)."""
    (name, trace_id, span_id, flags, state, parent_id, parent_remote, kind, start, end) = fields[
        :10
    ]
    status_code, description, attributes, events, scope, dropped = fields[10:]
    trace_id_number = int(trace_id, 16)
    context = SpanContext(
        trace_id_number,
        int(span_id, 16),
        is_remote=False,
        trace_flags=TraceFlags(flags),
        trace_state=TraceState([(key, value) for key, value in state]),
    )
    parent = None
    if parent_id is not None:
        parent = SpanContext(trace_id_number, int(parent_id, 16), is_remote=parent_remote)
    return RebuiltSpan(
        dropped,
        name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        events=[Event(event, attrs, timestamp) for event, timestamp, attrs in events],
        kind=SpanKind(kind),
        status=Status(StatusCode(status_code), description),
        start_time=start,
        end_time=end,
        instrumentation_scope=None if scope is None else scope_of(scope, scopes),
    )


def scope_of(fields: list[Any], scopes: Scopes) -> InstrumentationScope:
    """The scope `fields` name, made once (the OTLP encoder groups spans by scope, and a
    scope already seen is found by identity)."""
    name, version, schema_url = fields
    known = scopes.get((name, version, schema_url))
    if known is None:
        known = scopes[name, version, schema_url] = InstrumentationScope(name, version, schema_url)
    return known


class HashedOnceResource(Resource):
    """The child's one resource, hashed once: the OTLP encoder groups every span by resource,
    and the SDK's resource serialises its attributes to JSON for each hash."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def input_of(child: "subprocess.Popen[bytes]") -> IO[bytes]:
    """The child's input."""
    if child.stdin is None:  # started with one: cannot happen
        raise OSError("the span exporter's process has no input")
    return child.stdin


class RebuiltSpan(ReadableSpan):
    """A span rebuilt in the child, with the counts of what its original had to drop (its
    attributes arrive as a plain dict, which drops nothing)."""

    def __init__(self, dropped: list[int], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dropped_counts = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_counts[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped_counts[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped_counts[2]


class ProcessSpanExporter(SpanExporter):
    """Exports batches through a child process (see the module docstring). Called from the
    batch processor's one thread; the lock keeps a shutdown from overlapping an export."""

    def __init__(
        self, endpoint: str, *, service_name: str, log_level: str, log_format: str
    ) -> None:
        self._hello = hello(
            endpoint=endpoint,
            service_name=service_name,
            log_level=log_level,
            log_format=log_format,
        )
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._is_shut_down = False

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return None if self._child is None else self._child.pid

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Hand the batch to the child (its export's outcome is the child's to log)."""
        # An attribute value JSON cannot hold (bytes) goes as its text.
        line = orjson.dumps([span_fields(span) for span in spans], default=str) + b"\n"
        with self._lock:
            if self._is_shut_down:
                return SpanExportResult.FAILURE
            try:
                requests = self._requests()
                requests.write(line)
                requests.flush()
            except OSError:  # the child died: a new one takes the next batch
                self._end(kill=True)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _requests(self) -> IO[bytes]:
        """The running child's input, the child started first if it is not running."""
        child = self._child
        if child is not None and child.poll() is None:
            return input_of(child)
        self._end(kill=True)  # a child that died: its pipe closed, the process reaped
        # As every helper process (helper_process.py): its own session, the gateway's stderr.
        child = self._child = subprocess.Popen(  # noqa: S603 (this interpreter, our module)
            command(MODULE), stdin=subprocess.PIPE, start_new_session=True
        )
        requests = input_of(child)
        requests.write(self._hello)
        return requests

    def _end(self, *, kill: bool) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if not kill and child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()  # the child exports what it has, then ends
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(SHUTDOWN_TIMEOUT_S)
        if child.poll() is None:
            child.kill()
        child.wait()
        if child.stdin is not None:
            with contextlib.suppress(OSError):  # what it held is lost with it
                child.stdin.close()

    def shutdown(self) -> None:
        """End the child once it has exported what it was given: within SHUTDOWN_TIMEOUT_S of
        the batch being handed over (an export blocked on a child that does not read is cut
        short by killing the child)."""
        if not self._lock.acquire(timeout=SHUTDOWN_TIMEOUT_S):
            child = self._child
            if child is not None and child.poll() is None:
                child.kill()  # the blocked write fails, and the export gives the lock up
            self._lock.acquire()
        try:
            self._is_shut_down = True
            self._end(kill=False)
        finally:
            self._lock.release()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is held here: each batch is written to the child as it comes."""
        return True


def serve(first: dict[str, Any], batches: IO[bytes]) -> None:
    """The child's loop: one batch per line of `batches`, exported with the SDK's OTLP/HTTP
    exporter, until the input ends."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME

    resource = HashedOnceResource(Resource.create({SERVICE_NAME: first["service_name"]}))
    scopes: Scopes = {}
    exporter = OTLPSpanExporter(endpoint=first["endpoint"])
    # A batch makes tens of thousands of short-lived objects (the protobuf messages): at the
    # default threshold the collector ran many times per batch, a sixth of the child's CPU.
    tune_collector()
    try:
        for line in batches:
            spans = [span_of(fields, resource, scopes) for fields in orjson.loads(line)]
            exporter.export(spans)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]  # untyped upstream


def main() -> None:
    """`python -m ai_gateway.observability.span_export`: the child, started by the exporter."""
    serve(greeted(MODULE, needs="endpoint"), sys.stdin.buffer)


if __name__ == "__main__":
    main()
