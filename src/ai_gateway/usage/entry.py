"""Entry: one usage-ledger entry, as the journal holds it and the ledger table stores it.

A journal line is a JSON array: the entry's kind (`reserve` or `settle`), then its values in
`Entry`'s order: first what is known when the request is reserved, then its outcome (null in a
reservation). Writing one is one `orjson.dumps` of a list, and reading one back needs no key
look-ups: the shipper checks each value against its column and binds the values to an INSERT
that names the columns in this order.
"""

import operator
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Boolean, Column, Integer, String

from ai_gateway.usage.tables import ledger

RESERVE = "reserve"
SETTLE = "settle"
INTERRUPTED = "interrupted"
MAX_COUNT = 2**31 - 1
"""The largest count stored: an INTEGER column's on PostgreSQL (far below what JSON encoding
refuses)."""
LAST_TIME = datetime(9999, 12, 31, tzinfo=UTC).timestamp()
"""The latest creation time a datetime can hold (a line's later one is damaged)."""


class Entry(NamedTuple):
    """The ledger row's columns (a test holds them to the table's): first the reservation's,
    then the outcome's."""

    entry_id: str
    request_id: str
    created_at: float
    """Unix seconds."""
    key_id: str | None
    team: str | None
    route: str | None
    is_stream: bool
    reserved_tokens: int | None
    reserved_cost_usd: float | None
    provider: str | None
    model: str | None
    status: str | None
    """None in a reservation; the HTTP status as text, `rejected` or `interrupted` once settled."""
    http_status: int | None
    error_code: str | None
    attempts: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    latency_ms: float | None
    ttft_ms: float | None


COLUMN_NAMES = Entry._fields
RESERVED_COLUMNS = COLUMN_NAMES.index("provider")
"""How many columns, from the first, a reservation knows."""
NO_OUTCOME = (None,) * (len(COLUMN_NAMES) - RESERVED_COLUMNS)
"""A reservation's outcome columns."""
CREATED_AT, STATUS = COLUMN_NAMES.index("created_at"), COLUMN_NAMES.index("status")
COST_USD, RESERVED_COST_USD = (
    COLUMN_NAMES.index("cost_usd"),
    COLUMN_NAMES.index("reserved_cost_usd"),
)
RESERVATION_START = b'["' + RESERVE.encode() + b'"'
"""How a reservation's journal line begins."""


def line_of(kind: str, reserved: tuple[Any, ...], outcome: tuple[Any, ...] = NO_OUTCOME) -> bytes:
    """The journal line of an entry: its reservation's values then its outcome's, in `Entry`'s
    order."""
    return orjson.dumps([kind, *reserved, *outcome]) + b"\n"


@dataclass(frozen=True, slots=True)
class Fit:
    """What a column takes: its value types, whether it may be empty, its text length."""

    types: tuple[type, ...]
    nullable: bool
    length: int | None = None

    @classmethod
    def of(cls, column: Column[Any]) -> "Fit":
        """The fit of a ledger column (a time is Unix seconds on the journal line)."""
        kind, nullable = column.type, bool(column.nullable)
        if isinstance(kind, Boolean):
            return cls((bool,), nullable)
        if isinstance(kind, Integer):
            return cls((int,), nullable)
        if isinstance(kind, String):
            return cls((str,), nullable, kind.length)
        # A float column or the creation time: the ledger writes floats, and JSON keeps them
        # floats (an integer there is a line edited by hand).
        return cls((float,), nullable)


KEPT_SIGNATURES = 1024


class Fits:
    """Every column's fit, in column order: a settled entry's, or a reservation's (no status
    yet)."""

    def __init__(self, *, is_reservation: bool) -> None:
        self.columns = tuple(
            replace(fit, nullable=True) if is_reservation and name == "status" else fit
            for name, fit in ((name, Fit.of(ledger.c[name])) for name in COLUMN_NAMES)
        )
        self._types = tuple(
            frozenset(fit.types + ((type(None),) if fit.nullable else ())) for fit in self.columns
        )
        self._texts = tuple(
            (i, fit.length) for i, fit in enumerate(self.columns) if fit.length is not None
        )
        self._counts = tuple(i for i, fit in enumerate(self.columns) if fit.types == (int,))
        self._signatures: set[tuple[type, ...]] = set()
        """Value types seen to fit (a few: which columns are empty varies little)."""

    def fitted(self, values: list[Any]) -> list[Any] | None:
        """The values as their columns store them (text cut to length and without NUL
        characters, which PostgreSQL's text refuses; counts capped), or None for values no
        column could store (a line damaged past use)."""
        signature = tuple(map(type, values))
        if signature not in self._signatures:
            if len(signature) != len(self._types) or not all(
                map(operator.contains, self._types, signature)
            ):
                return None
            if len(self._signatures) < KEPT_SIGNATURES:
                self._signatures.add(signature)
        for index, length in self._texts:
            text = values[index]
            if text is not None:
                if len(text) > length:
                    values[index] = text = text[:length]
                if "\x00" in text:  # e.g. a model id an upstream or a caller sent
                    values[index] = text.replace("\x00", "\ufffd")
        for index in self._counts:
            count = values[index]
            if count is not None and not -MAX_COUNT <= count <= MAX_COUNT:
                values[index] = MAX_COUNT if count > 0 else -MAX_COUNT
        return values if 0 <= values[CREATED_AT] < LAST_TIME else None


FITS = {RESERVE: Fits(is_reservation=True), SETTLE: Fits(is_reservation=False)}


class Parsed(NamedTuple):
    """One journal line read back: its kind and the values of its columns."""

    kind: str
    values: list[Any]


def parse_line(line: bytes) -> Parsed | None:
    """A journal line's kind and values; None for a line that is not a whole entry."""
    try:
        values = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if type(values) is dict:  # written by an earlier version: keyed by column name
        values = [values.get("kind"), *(values.get(name) for name in COLUMN_NAMES)]
    if type(values) is not list or not values or type(kind := values[0]) is not str:
        return None
    fits = FITS.get(kind)
    columns = None if fits is None else fits.fitted(values[1:])
    return None if columns is None else Parsed(kind, columns)


def interrupted(reservation: list[Any]) -> list[Any]:
    """The values of a reservation its process never settled: cut short by a crash, costing
    the most it may have (its reserved cost)."""
    values = list(reservation)
    values[STATUS] = INTERRUPTED
    values[COST_USD] = values[RESERVED_COST_USD]
    return values


class SqliteTimes:
    """Creation times as SQLAlchemy stores them in SQLite (UTC text, microseconds), the date
    and time part kept per second: the entries of a batch share a few seconds."""

    FORMAT = "%Y-%m-%d %H:%M:%S"
    KEPT = 64

    def __init__(self) -> None:
        self._seconds: dict[int, str] = {}

    def text(self, unix_seconds: float) -> str:
        """`YYYY-MM-DD HH:MM:SS.ffffff` in UTC."""
        whole, micros = divmod(round(unix_seconds * 1_000_000), 1_000_000)
        prefix = self._seconds.get(whole)
        if prefix is None:
            if len(self._seconds) >= self.KEPT:
                self._seconds.clear()
            prefix = datetime.fromtimestamp(whole, UTC).strftime(self.FORMAT)
            self._seconds[whole] = prefix
        return f"{prefix}.{micros:06d}"

    def flattened(self, rows: list[list[Any]]) -> Iterator[Any]:
        """Every row's values, one after the other, each time as SQLite's text."""
        for values in rows:
            values[CREATED_AT] = self.text(values[CREATED_AT])
            yield from values


def as_mapping(values: list[Any]) -> dict[str, Any]:
    """A row as column name to value, its time as a UTC datetime (for SQLAlchemy's insert)."""
    row = dict(zip(COLUMN_NAMES, values, strict=True))
    row["created_at"] = datetime.fromtimestamp(values[CREATED_AT], UTC)
    return row
