"""SpanEncoder: spans, as `span_export.span_fields` describes them, into the OTLP export request,
built with the official protobuf messages (opentelemetry-proto) the SDK's encoder builds.

The SDK's encoder takes 75 µs per traced request here (two spans of about a dozen attributes:
two protobuf messages made in Python per attribute, for every span), and rebuilding its
`ReadableSpan`s from the pipe's fields 19 µs more. Most attributes repeat from one request to the
next (the operation, provider, model, route, deployment, status), so each distinct attribute is
encoded once, as a span holding only it, and a span's bytes are its own fields' bytes followed by
its attributes' (protobuf merges concatenated messages: repeated fields append). That makes about
32 µs per traced request (parsing the pipe's line included), the same bytes as the SDK's encoder
(tests/observability/test_span_export.py compares them). As the SDK's encoder does, an attribute
that cannot be encoded is logged and left out, not the batch.

Kept for reuse: booleans, integers and strings of at most KEPT_TEXT_CHARS characters (a float,
such as a cost, is rarely the same twice, and `-0.0 == 0.0`), at most ATTRIBUTES_KEPT of them (the
store starts afresh when full: values unique to a request, such as its id, pass through it).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceMessage
from opentelemetry.proto.trace.v1.trace_pb2 import (
    ResourceSpans,
    ScopeSpans,
    Span,
    SpanFlags,
    Status,
)
from opentelemetry.sdk.resources import Resource

log = structlog.get_logger(__name__)

ATTRIBUTES_KEPT = 4096
"""How many distinct encoded attributes are kept for reuse."""
KEPT_TEXT_CHARS = 256
"""The longest string value kept for reuse (captured messages are not)."""

HAS_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def any_value(value: object) -> AnyValue:
    """An attribute's value, as the SDK's encoder writes it (a bytes value arrives as its
    text)."""
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, Sequence):
        return AnyValue(array_value=ArrayValue(values=[any_value(item) for item in value]))
    if isinstance(value, Mapping):
        return AnyValue(kvlist_value=KeyValueList(values=key_values(value)))
    raise TypeError(f"an attribute value of type {type(value).__name__} cannot be encoded")


def key_value(key: str, value: object) -> KeyValue | None:
    """One attribute as a protobuf key-value; None, logged, if it cannot be encoded (an integer
    past 64 bits, say), as the SDK's encoder leaves it out."""
    try:
        return KeyValue(key=key, value=any_value(value))
    except (TypeError, ValueError) as error:
        log.warning("span_attribute_not_encoded", key=key, reason=str(error))
        return None


def key_values(attributes: Mapping[str, object]) -> list[KeyValue]:
    """Attributes as protobuf key-values (those that can be encoded)."""
    encoded = (key_value(key, value) for key, value in attributes.items())
    return [pair for pair in encoded if pair is not None]


def attribute_bytes(key: str, value: object) -> bytes:
    """One attribute, as the bytes of a span holding only it (none if it cannot be encoded)."""
    pair = key_value(key, value)
    if pair is None:
        return b""
    return Span(attributes=[pair]).SerializeToString()  # type: ignore[no-any-return]


def is_kept(value: object) -> bool:
    """Whether an attribute with this value is kept for reuse (exact types: what JSON gave)."""
    if isinstance(value, str):
        return len(value) <= KEPT_TEXT_CHARS
    kind = type(value)
    return kind is int or kind is bool


class SpanEncoder:
    """Batches of span fields into export requests, for spans of one resource (the exporting
    process's)."""

    def __init__(self, resource: Resource) -> None:
        self._resource = ResourceMessage(attributes=key_values(resource.attributes))
        self._resource_schema_url = resource.schema_url
        self._attributes: dict[tuple[str, type, Any], bytes] = {}

    @property
    def attributes_kept(self) -> int:
        """How many encoded attributes are kept for reuse."""
        return len(self._attributes)

    def request(self, batch: Sequence[list[Any]]) -> ExportTraceServiceRequest:
        """The export request for `batch`, its spans grouped by instrumentation scope."""
        scopes: dict[tuple[str, str | None, str | None], ScopeSpans] = {}
        for fields in batch:
            scope = fields[14]
            key = ("", None, None) if scope is None else tuple(scope)
            group = scopes.get(key)
            if group is None:
                group = scopes[key] = self._scope_spans(scope)
            group.spans.add().ParseFromString(self._span(fields))
        resource_spans = ResourceSpans(
            resource=self._resource,
            scope_spans=scopes.values(),
            schema_url=self._resource_schema_url,
        )
        return ExportTraceServiceRequest(resource_spans=[resource_spans] if scopes else [])

    @staticmethod
    def _scope_spans(scope: list[str | None] | None) -> ScopeSpans:
        if scope is None:
            return ScopeSpans(scope=InstrumentationScope())
        name, version, schema_url = scope  # (proto3: an empty string is no value)
        return ScopeSpans(
            scope=InstrumentationScope(name=name or "", version=version or ""),
            schema_url=schema_url or "",
        )

    def _span(self, fields: list[Any]) -> bytes:
        """One span's bytes: its own fields', then its attributes'."""
        (name, trace_id, span_id, _, state, parent_id, parent_remote, kind, start, end) = fields[
            :10
        ]
        status_code, description, attributes, events, _, dropped = fields[10:]
        span = Span(
            trace_id=bytes.fromhex(trace_id),
            span_id=bytes.fromhex(span_id),
            trace_state=",".join([f"{key}={value}" for key, value in state]),
            parent_span_id=b"" if parent_id is None else bytes.fromhex(parent_id),
            name=name,
            kind=kind + 1,  # the API's kinds count from 0, OTLP's from 1 (0: unspecified)
            start_time_unix_nano=start,
            end_time_unix_nano=end,
            events=[
                Span.Event(name=event, time_unix_nano=timestamp, attributes=key_values(attrs))
                for event, timestamp, attrs in events
            ],
            status=Status(code=status_code, message=description),
            dropped_attributes_count=dropped[0],
            dropped_events_count=dropped[1],
            dropped_links_count=dropped[2],
            flags=HAS_IS_REMOTE | IS_REMOTE if parent_remote else HAS_IS_REMOTE,
        )
        known = self._attributes
        encoded = [span.SerializeToString()]
        for key, value in attributes.items():
            if not is_kept(value):
                encoded.append(attribute_bytes(key, value))
                continue
            cell = (key, type(value), value)  # (True and 1 are equal keys)
            attribute = known.get(cell)
            if attribute is None:
                if len(known) >= ATTRIBUTES_KEPT:
                    known.clear()
                attribute = known[cell] = attribute_bytes(key, value)
            encoded.append(attribute)
        return b"".join(encoded)
