"""A small OTLP/HTTP trace receiver on 127.0.0.1: decodes each ExportTraceServiceRequest
(protobuf) it is sent and keeps its spans, attributes decoded to Python values."""

import gzip
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

TRACES_PATH = "/v1/traces"
HEALTH_PATH = "/healthz"


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int
    service_name: str

    @property
    def is_server(self) -> bool:
        return self.kind == SpanProto.SPAN_KIND_SERVER

    @property
    def is_client(self) -> bool:
        return self.kind == SpanProto.SPAN_KIND_CLIENT

    @property
    def is_error(self) -> bool:
        return self.status_code == 2  # STATUS_CODE_ERROR


def value_of(value: AnyValue) -> Any:
    """An attribute's value as Python."""
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def decoded(body: bytes) -> list[ReceivedSpan]:
    """The spans of one export request."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=span.kind,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes={a.key: value_of(a.value) for a in span.attributes},
                        status_code=span.status.code,
                        service_name=str(resource.get("service.name")),
                    )
                )
    return spans


class Receiver:
    """The receiver's state: every span received, and requests to other paths."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.bad_paths: list[str] = []
        self.lock = threading.Lock()

    def wait_for(self, count: int, timeout_s: float = 15.0) -> list[ReceivedSpan]:
        """Every span received, once at least `count` of them are not of health checks."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                spans = list(self.spans)
            if sum(s.attributes.get("url.path") != HEALTH_PATH for s in spans) >= count:
                return spans
            time.sleep(0.05)
        raise AssertionError(f"{len(self.spans)} spans arrived, {count} expected")


def handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != TRACES_PATH:
                receiver.bad_paths.append(self.path)
                self.send_response(404)
                self.end_headers()
                return
            spans = decoded(body)
            with receiver.lock:
                receiver.spans.extend(spans)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
    """A running receiver: its base URL (for OTEL_EXPORTER_OTLP_ENDPOINT) and its state."""
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(receiver))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
