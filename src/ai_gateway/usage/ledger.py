"""Ledger: the request path's side of the usage ledger. An accounted request (one that goes
upstream, or one a limit or budget refused) gets an entry id; its reservation is journaled
before the upstream call and its settled entry before the response's last byte leaves. The
shipper (usage/shipper.py) moves both into the database, off the request path."""

import random
import time
from typing import Any, Protocol

from ai_gateway.api.record import CLIENT_CLOSED, CLIENT_CLOSED_STATUS, RequestRecord
from ai_gateway.limits.estimate import estimate
from ai_gateway.routing.route import Route
from ai_gateway.schemas import ChatCompletionRequest, Usage
from ai_gateway.usage.entry import INTERRUPTED, MAX_COUNT, RESERVE, SETTLE, line_of
from ai_gateway.usage.journal import Journal, JournalRefusal, JournalUnwritable

REJECTED = "rejected"


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
                self.journal.reserve(record.entry_id, line_of(RESERVE, self._reserved(record)))
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
        line = line_of(SETTLE, self._reserved(record), self._outcome(record))
        try:
            self.journal.settle(record.entry_id, line)
        except JournalUnwritable:  # logged; the reservation stands for it
            return

    @staticmethod
    def _reserved(record: RequestRecord) -> tuple[Any, ...]:
        """What the entry knows from its reservation on, in `Entry`'s order."""
        caller = record.caller
        return (
            record.entry_id,
            record.request_id,
            record.wall_started,
            caller.key_id if caller else None,
            caller.team if caller else None,
            record.route,
            record.is_stream,
            record.reserved_tokens,
            record.reserved_cost_usd,
        )

    @staticmethod
    def _outcome(record: RequestRecord) -> tuple[Any, ...]:
        """What the settled entry adds, in `Entry`'s order."""
        usage = record.usage
        status, http_status = status_of(record)
        cached, reasoning = token_details(usage)
        return (
            record.provider,
            record.model,
            status,
            http_status,
            CLIENT_CLOSED if record.is_client_closed else record.error_code,
            record.attempts,
            capped(usage.prompt_tokens) if usage else None,
            capped(usage.completion_tokens) if usage else None,
            capped(cached),
            capped(reasoning),
            record.cost_usd,
            record.elapsed_ms(),
            record.first_byte_ms,
        )
