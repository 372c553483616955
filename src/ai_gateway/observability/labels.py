"""Label values with a bounded number of distinct values: a metric series per value a caller
could type would let any caller grow the gateway's memory and the scraper's storage."""

import asyncio
from collections.abc import Iterable

from ai_gateway.api.record import CLIENT_CLOSED, CLIENT_CLOSED_STATUS, RequestRecord
from ai_gateway.errors import GatewayError

OTHER = "other"
NONE = "none"
ERROR_OTHER = "_OTHER"
"""The semantic conventions' `error.type` for an error without a known name."""
INTERRUPTED = "interrupted"
CANCELLED = "cancelled"
REJECTION_CODES = frozenset(
    {"rpm_limit_exceeded", "tpm_limit_exceeded", "parallel_limit_exceeded", "budget_exceeded"}
)
EXTRA_ERROR_CODES = frozenset(
    {
        *REJECTION_CODES,
        CLIENT_CLOSED,
        "client_send_timeout",
        "limits_unavailable",
        "context_length_exceeded",
        "invalid_value",
    }
)


def gateway_error_codes() -> frozenset[str]:
    """Every code the gateway's own errors carry, and the few it sets by hand: what
    `error.type` may take besides HTTP statuses."""
    codes: set[str] = set(EXTRA_ERROR_CODES)
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        kind = pending.pop()
        if kind.code is not None:
            codes.add(kind.code)
        pending.extend(kind.__subclasses__())
    return frozenset(codes)


class NameBound:
    """Route, deployment and model names as label values: the ones the config names, then up to
    `limit` more once a request to them has succeeded (so `provider/model` routes show without a
    config file, but typed names that fail never take a slot); anything else is `other`."""

    def __init__(self, known: Iterable[str], *, limit: int) -> None:
        self.known = set(known)
        self.limit = limit
        self._learned = 0

    def value(self, name: str | None, *, learn: bool = False) -> str:
        """`name` if known (or learnt now, on a success with room left), else `other`."""
        if name is None:
            return NONE
        if name in self.known:
            return name
        if learn and self._learned < self.limit:
            self._learned += 1
            self.known.add(name)
            return name
        return OTHER


class ErrorTypes:
    """`error.type` values: a gateway error code when the gateway knows it, else the HTTP status
    (an upstream's own code could be any text), else `_OTHER`."""

    def __init__(self, codes: frozenset[str]) -> None:
        self.codes = codes

    def of_record(self, record: RequestRecord) -> str:
        """The request's error type; empty when it succeeded."""
        if record.is_client_closed:
            return CLIENT_CLOSED
        code, status = record.error_code, record.status
        if code is None and (status is None or status < 400):
            return "" if status is not None else INTERRUPTED
        if code in self.codes:
            return code
        return str(status) if status is not None else ERROR_OTHER

    def of_error(self, error: BaseException) -> str:
        """An attempt's error type."""
        if isinstance(error, GatewayError):
            return error.code if error.code in self.codes else str(error.status_code)
        return CANCELLED if isinstance(error, asyncio.CancelledError) else ERROR_OTHER


def status_label(record: RequestRecord) -> str:
    """The status the caller got, 499 when it left first, `interrupted` when none was sent."""
    if record.is_client_closed:
        return str(CLIENT_CLOSED_STATUS)
    return INTERRUPTED if record.status is None else str(record.status)


def rejection_reason(code: str | None) -> str:
    """A limit's or budget's code, else `other`."""
    return code if code in REJECTION_CODES else OTHER
