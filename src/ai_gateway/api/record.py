"""RequestRecord: what the request's single log line reports, filled in as the request runs,
and who made the request (its caller and, for a limited caller, its ticket to settle)."""

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ai_gateway.keys.caller import Caller
from ai_gateway.schemas import Usage

if TYPE_CHECKING:
    from ai_gateway.limits.admission import Ticket

CLIENT_CLOSED = "client_closed"
CLIENT_CLOSED_STATUS = 499
MAX_STREAMED_TEXT = 65536
"""The most completion text of one stream kept for its trace span."""


@dataclass(slots=True)
class RequestRecord:
    """Figures for one request's log line."""

    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    """When the request's first byte was read (api/connection.py), else when it reached the
    app."""
    status: int | None = None
    provider: str | None = None
    model: str | None = None
    route: str | None = None
    attempts: int | None = None
    is_mock: bool | None = None
    is_stream: bool = False
    upstream_ms: float | None = None
    gateway_ms: float | None = None
    usage: Usage | None = None
    error_code: str | None = None
    chunks: int = 0
    """Stream chunks relayed to the caller."""
    caller: Caller | None = None
    ticket: "Ticket | None" = None
    wall_started: float = field(default_factory=time.time)
    """The start as a Unix time (the ledger's `created_at`)."""
    first_byte_ms: float | None = None
    """Time to the first body byte handed to the server (a stream's first event)."""
    entry_id: str | None = None
    """The request's ledger entry, once it is accounted (reserved or rejected)."""
    reserved_tokens: int | None = None
    reserved_cost_usd: float | None = None
    cost_usd: float | None = None
    """What the request cost, once settled; None when its price is unknown."""
    is_rejected: bool = False
    """Refused by a limit or a budget before any upstream call."""
    is_settled: bool = False
    """The ledger entry has been written."""
    span: Any = None
    """The request's trace span, when tracing is on."""
    is_finished: bool = False
    """The response's last byte has been handed to the server."""
    is_client_closed: bool = False
    """The caller went away before the response ended."""
    streamed_text: dict[int, list[str]] | None = None
    """A stream's completion text by choice index, kept only while traces capture message
    content (None otherwise); at most MAX_STREAMED_TEXT characters."""
    streamed_chars: int = 0

    def keep_streamed_text(self, data: dict[str, Any]) -> None:
        """Add a chunk's content deltas to `streamed_text` (up to MAX_STREAMED_TEXT characters:
        a longer completion is cut there)."""
        if self.streamed_text is None or self.streamed_chars >= MAX_STREAMED_TEXT:
            return
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta, index = choice.get("delta"), choice.get("index")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and isinstance(index, int) and content:
                piece = content[: MAX_STREAMED_TEXT - self.streamed_chars]
                self.streamed_text.setdefault(index, []).append(piece)
                self.streamed_chars += len(piece)

    def note_upstream(self, since: float) -> None:
        """Record the upstream's time (to the answer, or to the first chunk of a stream)."""
        self.upstream_ms = round((time.perf_counter() - since) * 1000, 3)

    def elapsed_ms(self) -> float:
        """Milliseconds since the request began."""
        return round((time.perf_counter() - self.started) * 1000, 3)

    def server_timing(self) -> str:
        """The `Server-Timing` value when the response starts: gateway time, upstream time,
        and the time to the first byte the caller is sent (the head, which leaves at once: a
        stream's first event follows it in the same turn of the event loop).

        Gateway time and the first byte's count from the request's first byte read (so
        ttfb = gw + upstream). Gateway time is everything up to the response head but the
        upstream's share (for a stream, the upstream's share is its time to the first chunk).
        """
        elapsed = round((time.perf_counter() - self.started) * 1000, 3)
        self.gateway_ms = round(max(elapsed - (self.upstream_ms or 0.0), 0.0), 3)
        if self.upstream_ms is None:
            return f"gw;dur={self.gateway_ms}, ttfb;dur={elapsed}"
        return f"gw;dur={self.gateway_ms}, upstream;dur={self.upstream_ms}, ttfb;dur={elapsed}"

    def fields(self) -> dict[str, Any]:
        """The log line's key/value pairs."""
        usage, caller = self.usage, self.caller
        return {
            "method": self.method,
            "path": self.path,
            # 499 (the caller closed the request) exists only here, never on the wire
            "status": CLIENT_CLOSED_STATUS if self.is_client_closed else self.status,
            "latency_ms": self.elapsed_ms(),
            "upstream_ms": self.upstream_ms,
            "gateway_ms": self.gateway_ms,
            "provider": self.provider,
            "model": self.model,
            "route": self.route,
            "attempts": self.attempts,
            "mock": self.is_mock,
            "stream": self.is_stream,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "error_code": CLIENT_CLOSED if self.is_client_closed else self.error_code,
            "key_id": caller.key_id if caller else None,
            "team": caller.team if caller else None,
        }
