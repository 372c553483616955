"""Ledger: the request path's side of the usage ledger. An accounted request (one that goes
upstream, or one a limit or budget refused) gets an entry id; its reservation is journaled
before the upstream call and its settled entry before the response's last byte leaves. The
shipper (usage/shipper.py) moves both into the database, off the request path."""

import contextlib
import random
import time
from typing import Any, Protocol

from ai_gateway.api.record import CLIENT_CLOSED, CLIENT_CLOSED_STATUS, RequestRecord
from ai_gateway.limits.estimate import estimate
from ai_gateway.routing.route import Route
from ai_gateway.schemas import ChatCompletionRequest, Usage
from ai_gateway.usage.entry import INTERRUPTED, MAX_COUNT, RESERVE, SETTLE, Entry, line_of
from ai_gateway.usage.journal import Journal, JournalRefusal, JournalUnwritable

REJECTED = "rejected"
NO_OUTCOME: dict[str, Any] = dict.fromkeys(
    (
        "provider", "model", "status", "http_status", "error_code", "attempts", "prompt_tokens",
        "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "latency_ms",
        "ttft_ms",
    )
)  # fmt: skip
"""A reservation's columns that only its settled entry knows."""


class Pricing(Protocol):
    """What a request costs (usage/prices.py)."""

    def cost(self, provider: str, model: str, usage: Usage) -> float | None:
        """USD for a completion's usage; None when the model's price is unknown."""
        ...

    def max_cost(self, route: Route, prompt_tokens: int, completion_tokens: int) -> float | None:
        """The most USD a request may cost over the route's deployments; None when a price is
        unknown."""
        ...


def new_entry_id() -> str:
    """A unique id for a ledger entry, time first (so the table's key grows at its end, not at
    random places) then 64 random bits (not a secret: the PRNG is enough and cheap)."""
    return f"use_{time.time_ns():016x}{random.getrandbits(64):016x}"


def status_of(record: RequestRecord) -> tuple[str, int | None]:
    """The ledger's status and the HTTP status the caller got (499: it left before any)."""
    if record.is_rejected:
        return REJECTED, record.status
    status = record.status
    if status is None:
        status = CLIENT_CLOSED_STATUS if record.is_client_closed else None
    return (str(status) if status is not None else INTERRUPTED), status


def capped(count: int | None) -> int | None:
    """A count an upstream reported, within what the ledger stores."""
    return None if count is None else max(min(count, MAX_COUNT), -MAX_COUNT)


def token_details(usage: Usage | None) -> tuple[int | None, int | None]:
    """(cached prompt tokens, reasoning tokens) where the upstream reported them."""
    if usage is None:
        return None, None
    extra = usage.model_extra or {}
    prompt = extra.get("prompt_tokens_details")
    completion = extra.get("completion_tokens_details")
    cached = prompt.get("cached_tokens") if isinstance(prompt, dict) else None
    reasoning = completion.get("reasoning_tokens") if isinstance(completion, dict) else None
    return (
        cached if isinstance(cached, int) and not isinstance(cached, bool) else None,
        reasoning if isinstance(reasoning, int) and not isinstance(reasoning, bool) else None,
    )


class Ledger:
    """Journals every accounted request's reservation and settled entry (with no journal,
    `USAGE_LEDGER=false`, it only prices them)."""

    def __init__(
        self, journal: Journal | None, prices: Pricing, *, default_completion_tokens: int
    ) -> None:
        self.journal = journal
        self.prices = prices
        self.default_completion_tokens = default_completion_tokens

    def reserve(self, record: RequestRecord, route: Route, body: ChatCompletionRequest) -> None:
        """Before the upstream call: the request's most tokens and cost, journaled (a crash
        before its settle turns this into an `interrupted` entry carrying the estimate)."""
        total, prompt = estimate(body, default_completion_tokens=self.default_completion_tokens)
        total = min(total, MAX_COUNT)
        record.entry_id = new_entry_id()
        record.route, record.is_stream = route.name, body.is_streaming
        record.reserved_tokens = total
        record.reserved_cost_usd = self.prices.max_cost(route, prompt, total - prompt)
        if self.journal is not None:
            try:
                self.journal.reserve(record.entry_id, self._line(RESERVE, record))
            except JournalRefusal:  # refused (503): not accounted, nothing went upstream
                record.entry_id = None
                raise

    def reject(self, record: RequestRecord, route: Route, body: ChatCompletionRequest) -> None:
        """A limit or budget refused the request: it is accounted, as `rejected` (unless the
        journal is over its bound: refusals cost nothing and must not fill the disk)."""
        if self.journal is not None and self.journal.is_full():
            return
        record.entry_id = new_entry_id()
        record.route, record.is_stream = route.name, body.is_streaming
        record.is_rejected = True

    def settle(self, record: RequestRecord) -> None:
        """Once, when the response ends (before its last byte) or is cut short: the entry."""
        if record.entry_id is None or record.is_settled:
            return
        record.is_settled = True
        usage = record.usage
        if usage is not None and record.provider is not None and record.model is not None:
            record.cost_usd = self.prices.cost(record.provider, record.model, usage)
        if self.journal is None:
            return
        with contextlib.suppress(JournalUnwritable):  # logged; the reservation stands for it
            self.journal.settle(record.entry_id, self._line(SETTLE, record))

    @staticmethod
    def _line(kind: str, record: RequestRecord) -> bytes:
        """One journal line: the ledger row's values (a reservation's without the outcome)."""
        caller, usage = record.caller, record.usage
        known: dict[str, Any] = {
            "entry_id": record.entry_id,
            "request_id": record.request_id,
            "created_at": record.wall_started,
            "key_id": caller.key_id if caller else None,
            "team": caller.team if caller else None,
            "route": record.route,
            "is_stream": record.is_stream,
            "reserved_tokens": record.reserved_tokens,
            "reserved_cost_usd": record.reserved_cost_usd,
        }
        if kind == RESERVE:
            return line_of(kind, Entry(**known, **NO_OUTCOME))
        status, http_status = status_of(record)
        cached, reasoning = token_details(usage)
        entry = Entry(
            **known,
            provider=record.provider,
            model=record.model,
            status=status,
            http_status=http_status,
            error_code=CLIENT_CLOSED if record.is_client_closed else record.error_code,
            attempts=record.attempts,
            prompt_tokens=capped(usage.prompt_tokens) if usage else None,
            completion_tokens=capped(usage.completion_tokens) if usage else None,
            cached_tokens=capped(cached),
            reasoning_tokens=capped(reasoning),
            cost_usd=record.cost_usd,
            latency_ms=record.elapsed_ms(),
            ttft_ms=record.first_byte_ms,
        )
        return line_of(kind, entry)
