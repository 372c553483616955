"""The contract every gateway response keeps, whatever was sent to it or sent back to it.

A response is clean when: its status is below 500 (or one of `upstream_statuses`, for failures
an upstream caused), it carries no traceback, any non-2xx body is exactly the OpenAI error
envelope served as `application/json`, a 2xx stream is whole SSE frames ending in `[DONE]`
(a failure after the 200 as one final error event), and no secret appears in the body or
in any header.
"""

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ENVELOPE_FIELDS = frozenset({"message", "type", "param", "code"})
TRACEBACK_MARKS = ("Traceback (most recent call last)", 'File "/', "site-packages/")
EVENT_STREAM = "text/event-stream"
DONE = "[DONE]"


@dataclass(frozen=True)
class Exchange:
    """One request as sent and its response as received, bytes for bytes."""

    method: str
    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    sent: str = ""

    def describe(self) -> str:
        """The exchange for a failure message: what was sent, what came back."""
        shown = self.body[:600].decode("utf-8", "replace")
        return (
            f"{self.method} {self.url} {self.sent[:600]}\n"
            f"-> {self.status} {dict(self.headers)}\n{shown}"
        )

    @property
    def content_type(self) -> str:
        """The response's content type, as sent."""
        for name, value in self.headers.items():
            if name.lower() == "content-type":
                return value
        return ""


def is_envelope(payload: object) -> bool:
    """Whether `payload` is exactly `{"error": {message: str, type: str, param, code}}` with
    `param` and `code` each a string or null."""
    if not isinstance(payload, dict) or set(payload) != {"error"}:
        return False
    error = payload["error"]
    if not isinstance(error, dict) or set(error) != ENVELOPE_FIELDS:
        return False
    return (
        isinstance(error["message"], str)
        and isinstance(error["type"], str)
        and all(error[name] is None or isinstance(error[name], str) for name in ("param", "code"))
    )


def events_of(body: bytes) -> list[str]:
    """The data of each SSE event of a complete stream body, in order."""
    text = body.decode("utf-8")
    assert text.endswith("\n\n"), f"stream does not end with a whole event: {text[-200:]!r}"
    events = []
    for frame in text[:-2].split("\n\n"):
        assert frame.startswith("data: "), f"not a data frame: {frame[:200]!r}"
        assert "\n" not in frame, f"a frame of more than one line: {frame[:200]!r}"
        events.append(frame.removeprefix("data: "))
    return events


def check_stream(exchange: Exchange, *, upstream_statuses: Collection[int]) -> list[dict[str, Any]]:
    """A 2xx event stream: JSON frames, at most one error event and only last, then [DONE].
    Returns the decoded events before [DONE]."""
    events = events_of(exchange.body)
    assert events[-1:] == [DONE], f"stream does not end with [DONE]: {events[-3:]}"
    assert DONE not in events[:-1], "[DONE] sent twice"
    decoded = [json.loads(event) for event in events[:-1]]
    for index, event in enumerate(decoded):
        assert isinstance(event, dict), f"an event that is not an object: {event!r}"
        if "error" not in event:
            continue
        assert index == len(decoded) - 1, "an error event that is not the last event"
        status = event.get("status_code")
        assert isinstance(status, int), f"an error event without its status: {event!r}"
        assert status < 500 or status in upstream_statuses, f"a {status} mid-stream: {event!r}"
        assert is_envelope({"error": event["error"]}), f"a malformed error event: {event!r}"
        assert set(event) == {"error", "status_code"}, f"extra fields in an error event: {event!r}"
    return decoded


def check_exchange(
    exchange: Exchange,
    *,
    secrets: Iterable[str] = (),
    upstream_statuses: Collection[int] = (),
) -> None:
    """Assert the contract on one exchange (see the module docstring)."""
    where = exchange.describe()
    assert exchange.status < 500 or exchange.status in upstream_statuses, where
    text = exchange.body.decode("utf-8", "replace")
    for mark in TRACEBACK_MARKS:
        assert mark not in text, f"traceback text in the body:\n{where}"
    for secret in secrets:
        assert secret not in text, f"a secret in the body:\n{where}"
        for header in exchange.headers.items():
            assert secret not in "".join(header), f"a secret in a header:\n{where}"
    if exchange.method == "HEAD":
        assert exchange.body == b"", where
        return
    if 200 <= exchange.status < 300:
        if exchange.content_type.startswith(EVENT_STREAM):
            check_stream(exchange, upstream_statuses=upstream_statuses)
        else:
            assert exchange.content_type == "application/json", where
            json.loads(exchange.body)
        return
    assert exchange.content_type == "application/json", where
    assert is_envelope(json.loads(exchange.body)), where
