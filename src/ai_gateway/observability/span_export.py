"""ProcessSpanExporter: the spans' OTLP encoding and export, in a process of its own.

The OpenTelemetry SDK's OTLP/HTTP exporter encodes each span into protobuf in Python (about
40 µs per span here, two spans per traced request) and posts the batches with `requests`, on
the batch processor's thread of the serving process: with every request traced, that thread took
about 100 µs of CPU per request, and the interpreter lock with it (about a third of the tracing's
cost in throughput). So the batch processor hands its batches to this exporter instead, which
writes each span's fields as one JSON array (a few µs) to a child process
(`python -m ai_gateway.observability.span_export`, started with the first batch); the child
encodes them (observability/span_encoder.py: the SDK's encoder took three times as long) and
exports them with the SDK's own OTLP exporter, which reads the standard `OTEL_EXPORTER_OTLP_*`
variables there as it would here (the child inherits the environment).

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
import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

import orjson
import structlog
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ai_gateway.collector import tune_collector
from ai_gateway.helper_process import command, greeted, hello

log = structlog.get_logger(__name__)

MODULE = "ai_gateway.observability.span_export"
"""This module, as its helper process runs it (`python -m`: its `__name__` is then `__main__`)."""

SHUTDOWN_TIMEOUT_S = 10.0
"""How long a shutdown waits for the child to export its last spans before killing it."""


def span_fields(span: ReadableSpan) -> list[Any]:
    """What an OTLP export holds of a span, and its trace flags, as JSON values (ids as hex: a
    trace id does not fit JSON's integers)."""
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


def input_of(child: "subprocess.Popen[bytes]") -> IO[bytes]:
    """The child's input."""
    if child.stdin is None:  # started with one: cannot happen
        raise OSError("the span exporter's process has no input")
    return child.stdin


def batch_line(spans: Sequence[ReadableSpan]) -> bytes:
    """A batch as the child reads it: one line of JSON. An attribute value JSON cannot hold
    (bytes) goes as its text; an integer past 64 bits (an upstream's token count, say), which
    orjson refuses, is written by the standard library's encoder, and read as a float."""
    fields = [span_fields(span) for span in spans]
    try:
        return orjson.dumps(fields, default=str) + b"\n"
    except TypeError:
        return json.dumps(fields, default=str).encode() + b"\n"


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
        line = batch_line(spans)
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
    # Here, not at the top: the serving process loads neither the protobuf messages nor the
    # exporter.
    from opentelemetry.exporter.otlp.proto.http import trace_exporter
    from opentelemetry.sdk.resources import SERVICE_NAME

    from ai_gateway.observability.span_encoder import SpanEncoder

    exporter_class = trace_exporter.OTLPSpanExporter
    if "encode_spans" not in exporter_class.export.__code__.co_names:
        raise RuntimeError("this OTLP exporter does not encode through encode_spans")
    encoder = SpanEncoder(Resource.create({SERVICE_NAME: first["service_name"]}))
    # The exporter's encoding step, in this process only: it is handed each batch's fields and
    # posts what the encoder made of them, with its own headers, compression and timeout.
    setattr(trace_exporter, "encode_spans", encoder.request)  # noqa: B010 (a module's name)
    exporter = exporter_class(endpoint=first["endpoint"])
    # A batch makes thousands of short-lived objects (the protobuf messages): at the default
    # threshold the collector ran many times per batch.
    tune_collector()
    try:
        for line in batches:
            try:
                batch = orjson.loads(line)
            except orjson.JSONDecodeError as error:  # (a NaN next to such an integer)
                log.warning("span_batch_not_read", reason=str(error))
                continue
            exporter.export(batch)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]  # untyped upstream


def main() -> None:
    """`python -m ai_gateway.observability.span_export`: the child, started by the exporter."""
    serve(greeted(MODULE, needs="endpoint"), sys.stdin.buffer)


if __name__ == "__main__":
    main()
