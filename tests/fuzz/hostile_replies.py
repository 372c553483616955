"""Hostile upstream replies: bombs, huge bodies, endless SSE lines, redirects, random bytes,
cut JSON, wrong content types and statuses, the upstream's key echoed in every field of an
error, numbers out of range. Each kind says how it is built (its details drawn by hypothesis),
whether the caller asks for a stream, and what the caller must get back."""

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

from tests.fake_upstream import Reply, gzip_bytes, json_reply, sse_reply
from tests.fakes import MODEL, UPSTREAM_KEY, chunk_payloads, completion_payload
from tests.fuzz.contract import EVENT_STREAM

KIB = 1024
MIB = 1024 * KIB
# The gateway under test reads at most this much of a reply and of one stream event (settings
# chosen small, so that going over them is cheap).
MAX_RESPONSE_BYTES = MIB
MAX_EVENT_BYTES = 64 * KIB
BOMB_BYTES = 32 * MIB
# A key of no known shape: only the gateway's list of configured keys can catch it.
VENDOR_KEY = "Plain0Vendor1Key2Without3Prefix"
VENDOR = "mistral"
ERROR_STATUSES = [400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504]
KEY_FIELDS = ["message", "code", "param", "type"]
CONTENT_TYPES = [
    "application/json",
    "text/event-stream",
    "text/html; charset=utf-8",
    "text/plain",
    "application/octet-stream",
    "application/json; charset=utf-16",
]


@dataclass(frozen=True)
class Target:
    """Where a request goes: the route, the model, and the key its upstream holds."""

    name: str
    model: str
    key: str


TARGETS = [
    Target("cerebras", f"cerebras/{MODEL}", UPSTREAM_KEY),
    Target(VENDOR, f"{VENDOR}/m", VENDOR_KEY),
]


T = TypeVar("T")


class Draw(Protocol):
    """Draws a value from a strategy (a hypothesis `data.draw`)."""

    def __call__(self, strategy: st.SearchStrategy[T], /) -> T: ...


@dataclass(frozen=True)
class Hostile:
    """One kind of hostile reply: how it is built (drawing its details), whether the caller
    asks for a stream, and what the caller must get.

    `outcome` is "refused" (an error status), "broken stream" (the 200 stream ending in an
    error event), "broken stream or refused" (either), or "any" (whatever it is, as long as it
    is clean). `transports` are the Cerebras transports it runs over.
    """

    name: str
    build: Callable[[Draw, Target, str], Reply]
    is_stream: bool
    outcome: str
    transports: frozenset[str] = frozenset({"native", "sdk"})


def zeros(total: int) -> Iterator[bytes]:
    """`total` zero bytes, a mebibyte at a time."""
    for _ in range(total // MIB):
        yield bytes(MIB)


@cache
def bomb(*, is_stream: bool) -> bytes:
    """A small gzip body inflating to BOMB_BYTES: one JSON string, or one SSE event."""
    head = b"data: " if is_stream else b'{"id": "'
    return gzip_bytes(itertools.chain([head], zeros(BOMB_BYTES)))


def bomb_reply(draw: Draw, target: Target, elsewhere: str, *, is_stream: bool) -> Reply:
    """The bomb, whole with a Content-Length or in chunks of any size."""
    body = bomb(is_stream=is_stream)
    content_type = EVENT_STREAM if is_stream else "application/json"
    headers = {"Content-Type": content_type, "Content-Encoding": "gzip"}
    if not draw(st.booleans()):
        return Reply(headers=headers, body=body)
    size = draw(st.sampled_from([1 * KIB, 16 * KIB, 64 * KIB]))
    return Reply(headers=headers, chunks=[body[at : at + size] for at in range(0, len(body), size)])


def huge_json(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A real completion, too big: declared with a Content-Length, or chunked (no length)."""
    size = draw(st.integers(MAX_RESPONSE_BYTES + 1, 3 * MAX_RESPONSE_BYTES))
    body = json.dumps(completion_payload(text="x" * size)).encode()
    headers = {"Content-Type": "application/json"}
    if draw(st.booleans()):
        return Reply(headers=headers, body=body)
    return Reply(
        headers=headers, chunks=[body[at : at + 256 * KIB] for at in range(0, len(body), 256 * KIB)]
    )


def random_bytes(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """Any bytes, under any status and content type."""
    status = draw(st.sampled_from([200, 200, 400, 404, 422, 500]))
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    body = draw(st.binary(min_size=1, max_size=2000))
    return Reply(status=status, headers={"Content-Type": content_type}, body=body)


def truncated_json(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A completion cut short, with a Content-Length that says so."""
    body = json.dumps(completion_payload()).encode()
    return Reply(
        headers={"Content-Type": "application/json"},
        body=body[: draw(st.integers(0, len(body) - 1))],
    )


def dropped_json(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A completion whose connection drops part way, its Content-Length promising more."""
    body = json.dumps(completion_payload()).encode()
    return Reply(
        headers={"Content-Type": "application/json"},
        body=body,
        drop_after=draw(st.integers(0, len(body) - 1)),
    )


def mislabelled_json(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A good completion under a content type that is not JSON."""
    content_type = draw(st.sampled_from(CONTENT_TYPES[1:]))
    return json_reply(completion_payload(), headers={"Content-Type": content_type})


def not_a_completion(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """JSON that is no completion: a bare value, a list, an object of the wrong shape, or a
    completion whose fields have the wrong types."""
    payload = draw(
        st.sampled_from(
            [
                None,
                1,
                "text",
                [],
                [completion_payload()],
                {},
                {"choices": None},
                {"choices": [None]},
                {"choices": [{"message": None}]},
                {"choices": [{"message": {"content": 1}}]},
                completion_payload(id=1),
                completion_payload(model=None),
                completion_payload(choices=[{"index": "0", "message": {"content": "x"}}]),
                completion_payload(choices=[{"index": 0, "message": {"role": "user"}}]),
            ]
        )
    )
    return json_reply(payload)


def status_only(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """An empty body under a status no completion has."""
    status = draw(st.sampled_from([200, 201, 204, 304, 400, 404, 429, 500, 503]))
    return Reply(status=status, headers={"Content-Type": "application/json"})


def redirect(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A redirect to another local server."""
    status = draw(st.sampled_from([301, 302, 303, 307, 308]))
    return Reply(status=status, headers={"Location": f"{elsewhere}/v1/chat/completions"})


def key_in_fields(draw: Draw, key: str) -> dict[str, Any]:
    """An OpenAI-style error object with the key in one field, or in every field."""
    error = {"message": "rejected", "type": "invalid_request_error", "code": "bad", "param": "p"}
    fields = draw(st.sampled_from([[name] for name in KEY_FIELDS] + [KEY_FIELDS]))
    prefix = draw(st.sampled_from(["", "key ", "Bearer ", "Incorrect API key provided: "]))
    return {**error, **dict.fromkeys(fields, f"{prefix}{key} here")}


def error_shape(draw: Draw, key: str) -> Any:
    """An upstream error body in one of the shapes vendors use, the key in it."""
    fields = key_in_fields(draw, key)
    return draw(
        st.sampled_from(
            [
                {"error": fields},
                {"error": fields["message"]},
                {"message": fields["message"], "code": fields["code"]},
                {"detail": [{"msg": fields["message"], "loc": ["body", fields["param"]]}]},
                {"detail": fields["message"]},
                fields["message"],
            ]
        )
    )


def key_in_error_status(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """An error status whose body (JSON of any shape, or plain text) echoes the key."""
    status = draw(st.sampled_from(ERROR_STATUSES))
    body = error_shape(draw, target.key)
    if isinstance(body, str):
        return Reply(status=status, headers={"Content-Type": "text/plain"}, body=body.encode())
    return json_reply(body, status=status)


def key_in_html_page(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A proxy's HTML error page that prints the request's Authorization header."""
    status = draw(st.sampled_from([400, 403, 404, 500, 502, 503, 504]))
    page = (
        f"<html><body><h1>{status}</h1><pre>Authorization: Bearer {target.key}</pre></body></html>"
    )
    return Reply(status=status, headers={"Content-Type": "text/html"}, body=page.encode())


def key_in_ok_error(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A 200 whose body is an error (`{"error": ..., "status_code": 400}`) echoing the key."""
    status = draw(st.sampled_from([400, 401, 404, 422, 429, 500, 503, None]))
    body: dict[str, Any] = {"error": key_in_fields(draw, target.key)}
    if status is not None:
        body["status_code"] = status
    return json_reply(body)


def first_chunks() -> list[dict[str, Any]]:
    """The first two chunks of a good stream (role, then content)."""
    return chunk_payloads()[:2]


def rest_of_stream() -> list[dict[str, Any]]:
    """The chunks that follow `first_chunks`."""
    return chunk_payloads()[2:]


# Between events of a stream that breaks after its first chunks, so that the first chunk
# usually reaches the gateway on its own and the 200 is sent before the failure.
LATER_DELAY_S = 0.02


def stream_of(events: list[Any], *, delay: float = 0.0) -> Reply:
    """An SSE reply of `events`, then the rest of a good stream and `[DONE]` (which the
    gateway must not reach once an event has failed)."""
    return sse_reply([*events, *rest_of_stream()], chunk_delay=delay)


def long_line(draw: Draw) -> bytes:
    """One `data:` line longer than the event limit (a JSON string that never ends)."""
    size = draw(st.integers(MAX_EVENT_BYTES + 1, 4 * MAX_EVENT_BYTES))
    return b'data: {"id": "' + b"x" * size + b'"}\n\n'


def long_line_first(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """An overlong line before any chunk, sent whole or in pieces."""
    line = long_line(draw)
    size = draw(st.sampled_from([len(line), 1000, 32 * KIB]))
    pieces = [line[at : at + size] for at in range(0, len(line), size)]
    return stream_of([*pieces, *first_chunks()])


def long_line_later(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """An overlong line after the first chunks."""
    return stream_of([*first_chunks(), long_line(draw)], delay=LATER_DELAY_S)


def error_event(draw: Draw, key: str) -> dict[str, Any]:
    """An error event echoing the key, with or without a status."""
    event: dict[str, Any] = {"error": key_in_fields(draw, key)}
    status = draw(st.sampled_from([None, 400, 429, 500, 503]))
    if status is not None:
        event["status_code"] = status
    return event


def key_in_first_event(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A stream whose first event is an error echoing the key."""
    return stream_of([error_event(draw, target.key)])


def key_in_later_event(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A stream that fails with an error event echoing the key after its first chunks."""
    return stream_of([*first_chunks(), error_event(draw, target.key)], delay=LATER_DELAY_S)


def utf8_line(draw: Draw) -> bytes:
    """Any text without a line end, as UTF-8."""
    text = draw(st.text(min_size=1, max_size=200))
    return text.replace("\n", " ").replace("\r", " ").encode("utf-8", "surrogatepass")


def not_utf8_line(draw: Draw) -> bytes:
    """Bytes without a line end that are not UTF-8."""
    raw = draw(st.binary(max_size=100)).replace(b"\n", b"").replace(b"\r", b"")
    return raw + draw(st.sampled_from([b"\x80", b"\xff", b"\xc3", b"\xed\xa0\x80"]))


def junk_event(draw: Draw, *, is_utf8: bool = True) -> bytes:
    """A `data:` event of cut JSON, JSON that is no chunk, or any text (or, unless `is_utf8`,
    bytes that are not UTF-8)."""
    if not is_utf8:
        return b"data: " + not_utf8_line(draw) + b"\n\n"
    cut = json.dumps(chunk_payloads()[1]).encode()
    # `choices` a string, not a number: a number is a 500 still (test_reproductions.py).
    fixed = [cut[:10], cut[:-1], b"1", b"[]", b'"text"', b'{"choices": "1"}', b"null"]
    data = draw(st.sampled_from(fixed)) if draw(st.booleans()) else utf8_line(draw)
    return b"data: " + data + b"\n\n"


def junk_first(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A stream whose first event is junk."""
    return stream_of([junk_event(draw), *first_chunks()])


def junk_later(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A stream with a junk event after its first chunks."""
    return stream_of([*first_chunks(), junk_event(draw)], delay=LATER_DELAY_S)


def not_utf8_first(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A stream whose first event is not UTF-8."""
    return stream_of([junk_event(draw, is_utf8=False), *first_chunks()])


def not_utf8_later(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A stream with an event that is not UTF-8 after its first chunks."""
    return stream_of([*first_chunks(), junk_event(draw, is_utf8=False)], delay=LATER_DELAY_S)


def random_stream(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """Any text as an event stream, line ends and all, after zero or more good chunks."""
    head = draw(st.sampled_from([[], first_chunks()]))
    text = draw(st.text(min_size=1, max_size=2000)).encode("utf-8", "surrogatepass")
    return sse_reply([*head, text], done=draw(st.booleans()))


def odd_retry_hints(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A 429 or 5xx whose Retry-After and retry-after-ms say anything at all."""
    hint = st.sampled_from(
        [
            "0",
            "-1",
            "1e309",
            "nan",
            "99999999999999999999",
            "soon",
            "",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ]
    )
    headers = {"Retry-After": draw(hint)}
    if draw(st.booleans()):
        headers["retry-after-ms"] = draw(hint)
    status = draw(st.sampled_from([429, 500, 503]))
    return json_reply({"error": {"message": "slow down"}}, status=status, headers=headers)


def dropped_stream(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A stream whose connection drops after its first chunks, without `[DONE]`."""
    events = chunk_payloads()
    return sse_reply(events, drop_after=draw(st.integers(2, len(events))))


def unfinished_stream(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A stream that ends cleanly without `[DONE]`, perhaps in the middle of an event."""
    events: list[Any] = chunk_payloads()
    if draw(st.booleans()):
        events = [*events, b'data: {"id": "chatcmpl-upstream-2", "cho']
    return sse_reply(events, done=False)


def mislabelled_stream(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A good stream under another content type, or a JSON completion where a stream was
    asked for."""
    content_type = draw(st.sampled_from([ct for ct in CONTENT_TYPES if ct != EVENT_STREAM]))
    if draw(st.booleans()):
        return json_reply(completion_payload(), headers={"Content-Type": content_type})
    return sse_reply(chunk_payloads(), headers={"Content-Type": content_type})


NON_FINITE = [b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity"]


def with_number(payload: dict[str, Any], draw: Draw) -> bytes:
    """`payload` as JSON with its `created` (or a token count) a number no double holds, or
    one JSON does not allow."""
    number = draw(st.sampled_from(NON_FINITE))
    text = json.dumps({**payload, "created": "NUMBER"}).encode()
    if "usage" in payload and draw(st.booleans()):
        usage = {**payload["usage"], "prompt_tokens": "NUMBER"}
        text = json.dumps({**payload, "usage": usage}).encode()
    return text.replace(b'"NUMBER"', number)


def out_of_range(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A completion holding a number out of range."""
    body = with_number(completion_payload(), draw)
    return Reply(headers={"Content-Type": "application/json"}, body=body)


def out_of_range_stream(draw: Draw, target: Target, elsewhere: str) -> Reply:
    """A stream with a number out of range in one of its chunks."""
    chunks = chunk_payloads()
    at = draw(st.integers(0, len(chunks) - 1))
    event = with_number(chunks[at], draw).decode()  # a str goes as one `data:` event
    return sse_reply([*chunks[:at], event, *chunks[at + 1 :]])


def gzip_bomb_json(draw: Draw, target: Target, elsewhere: str) -> Reply:
    return bomb_reply(draw, target, elsewhere, is_stream=False)


def gzip_bomb_stream(draw: Draw, target: Target, elsewhere: str) -> Reply:
    return bomb_reply(draw, target, elsewhere, is_stream=True)


HOSTILE = [
    Hostile("gzip bomb", gzip_bomb_json, is_stream=False, outcome="refused"),
    Hostile("huge JSON", huge_json, is_stream=False, outcome="refused"),
    Hostile("random bytes", random_bytes, is_stream=False, outcome="refused"),
    Hostile("truncated JSON", truncated_json, is_stream=False, outcome="refused"),
    Hostile("dropped JSON", dropped_json, is_stream=False, outcome="refused"),
    Hostile("JSON mislabelled", mislabelled_json, is_stream=False, outcome="any"),
    Hostile("not a completion", not_a_completion, is_stream=False, outcome="refused"),
    Hostile("status only", status_only, is_stream=False, outcome="refused"),
    Hostile("redirect", redirect, is_stream=False, outcome="refused"),
    Hostile("key in error status", key_in_error_status, is_stream=False, outcome="refused"),
    Hostile("key in HTML page", key_in_html_page, is_stream=False, outcome="refused"),
    Hostile("key in 200 error", key_in_ok_error, is_stream=False, outcome="refused"),
    Hostile("odd retry hints", odd_retry_hints, is_stream=False, outcome="refused"),
    Hostile("numbers out of range", out_of_range, False, "refused", frozenset({"native"})),
    Hostile("stream numbers out of range", out_of_range_stream, True, "any", frozenset({"native"})),
    Hostile("stream gzip bomb", gzip_bomb_stream, is_stream=True, outcome="refused"),
    Hostile("stream redirect", redirect, is_stream=True, outcome="refused"),
    Hostile("stream key in error status", key_in_error_status, is_stream=True, outcome="refused"),
    Hostile("stream key in HTML page", key_in_html_page, is_stream=True, outcome="refused"),
    Hostile("long line first", long_line_first, is_stream=True, outcome="refused"),
    # Valid events read together with an overlong one are refused with it: when the machine
    # is slow to read, the first chunks and the long line arrive in one read, a 502.
    Hostile("long line later", long_line_later, True, "broken stream or refused"),
    Hostile("key in first event", key_in_first_event, is_stream=True, outcome="refused"),
    Hostile("key in later event", key_in_later_event, is_stream=True, outcome="broken stream"),
    Hostile("junk first", junk_first, is_stream=True, outcome="refused"),
    Hostile("junk later", junk_later, is_stream=True, outcome="broken stream"),
    # Over the SDK these are 500s (test_reproductions.py): over the native transport only.
    Hostile("not UTF-8 first", not_utf8_first, True, "refused", frozenset({"native"})),
    Hostile("not UTF-8 later", not_utf8_later, True, "broken stream", frozenset({"native"})),
    Hostile("random stream", random_stream, is_stream=True, outcome="any"),
    Hostile("dropped stream", dropped_stream, is_stream=True, outcome="any"),
    Hostile("unfinished stream", unfinished_stream, is_stream=True, outcome="any"),
    Hostile("stream mislabelled", mislabelled_stream, is_stream=True, outcome="any"),
]
