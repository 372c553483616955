"""Shipper: moves journal entries into the ledger table, in batches, off the request path.

Inserts are idempotent by entry id (`ON CONFLICT DO NOTHING`), so a batch shipped twice (the
process died after the commit, before it noted the progress) is stored once. This process's
own segments are shipped as they grow (settled entries only: a reservation is still in
flight); segments left by a process that has died are shipped whole, and their reservations
without a settled entry become `interrupted` entries carrying the reserved estimate. A
database that cannot be reached is retried with a backoff: nothing is dropped, the journal
waits (and is bounded, see usage/journal.py).
"""

import asyncio
import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import orjson
import structlog
from sqlalchemy import Boolean, Insert, Integer, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ai_gateway.db.engine import failure_reason
from ai_gateway.usage.journal import SUFFIX, Journal, Segment, lock, owner_of
from ai_gateway.usage.ledger import INTERRUPTED, RESERVE, SETTLE
from ai_gateway.usage.tables import ledger

log = structlog.get_logger(__name__)

READ_BYTES = 4 * 1024 * 1024
"""The most journal bytes read for one batch."""
ROWS_PER_INSERT = 500
"""Rows per statement: 500 x 23 columns stays under both databases' bound-parameter limits
(SQLite 32,766, PostgreSQL 32,767)."""
MAX_BACKOFF_S = 30.0
COLUMN_ORDER = tuple(column.name for column in ledger.columns)
CREATED_AT, IS_STREAM = COLUMN_ORDER.index("created_at"), COLUMN_ORDER.index("is_stream")
RESERVATION_START = b'{"kind":"' + RESERVE.encode() + b'"'
"""How a reservation's journal line begins (the ledger writes `kind` first)."""
MAX_COUNT = 2**31 - 1
"""The largest value of an INTEGER column on PostgreSQL."""
COUNTS = tuple(
    column.name
    for column in ledger.columns
    if isinstance(column.type, Integer) and not isinstance(column.type, Boolean)
)
TEXT_LENGTHS = {
    column.name: column.type.length
    for column in ledger.columns
    if isinstance(column.type, String) and column.type.length is not None
}
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy stores a time in SQLite (UtcDateTime: UTC, no offset)."""


def insert_ignoring_duplicates(engine: AsyncEngine) -> Insert:
    """INSERT ... ON CONFLICT (entry_id) DO NOTHING, for PostgreSQL (run as asyncpg's
    executemany: one round trip for the batch)."""
    return postgresql.insert(ledger).on_conflict_do_nothing(index_elements=["entry_id"])


def sqlite_values(row: dict[str, Any]) -> list[Any]:
    """A row's values in column order as SQLite stores them (times as SQLAlchemy's SQLite
    text, in UTC; booleans as 0/1)."""
    values = [row[name] for name in COLUMN_ORDER]
    values[CREATED_AT] = row["created_at"].strftime(SQLITE_TIME)
    values[IS_STREAM] = int(bool(row["is_stream"]))
    return values


async def insert_sqlite(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """One `INSERT OR IGNORE` of every row (a multi-row VALUES), straight to the driver.

    One statement, not one per row: SQLite's driver runs in a thread of its own and takes the
    interpreter lock back once per statement, which per row cost the event loop far more than
    the insert itself; SQLAlchemy's own multi-row VALUES compiles too slowly for a batch.
    """
    row_marks = "(" + ", ".join("?" * len(COLUMN_ORDER)) + ")"
    # Only the table's own column names and placeholders: every value is a bound parameter.
    statement = (
        f"INSERT OR IGNORE INTO {ledger.name} ({', '.join(COLUMN_ORDER)}) VALUES "  # noqa: S608
        + ", ".join([row_marks] * len(rows))
    )
    params = tuple(chain.from_iterable(sqlite_values(row) for row in rows))
    await connection.exec_driver_sql(statement, params)


def row_of(entry: dict[str, Any]) -> dict[str, Any]:
    """A journal entry as a ledger row (every column present; times as UTC datetimes; text
    cut to its column's length, so no value can make a batch fail again at every retry)."""
    row = {name: entry.get(name) for name in COLUMN_ORDER}
    row["created_at"] = datetime.fromtimestamp(float(entry["created_at"]), UTC)
    for name, length in TEXT_LENGTHS.items():
        value = row[name]
        if isinstance(value, str) and len(value) > length:
            row[name] = value[:length]
    for name in COUNTS:  # an upstream's absurd count must still fit the column
        value = row[name]
        if isinstance(value, int) and not -MAX_COUNT <= value <= MAX_COUNT:
            row[name] = MAX_COUNT if value > 0 else -MAX_COUNT
    return row


def checked_row(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The entry's row; None (logged) for an entry damaged past use (a file cut or edited):
    one such entry must not stop every later one from being shipped."""
    try:
        row = row_of(entry)
        if not isinstance(row["entry_id"], str) or not isinstance(row["status"], str):
            raise TypeError("entry_id and status must be text")
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        log.warning("usage_journal_entry_skipped", reason=str(exc)[:200])
        return None
    return row


def interrupted(reservation: dict[str, Any]) -> dict[str, Any]:
    """The entry for a reservation its process never settled: cut short by a crash."""
    return {
        **reservation,
        "kind": SETTLE,
        "status": INTERRUPTED,
        "cost_usd": reservation.get("reserved_cost_usd"),
    }


def parse(data: bytes, *, settled_only: bool = False) -> tuple[list[dict[str, Any]], int]:
    """The complete entries in `data` and how many bytes they span (a trailing partial line
    is left for later; a line that is not an entry is logged and skipped). `settled_only`
    skips reservations unread."""
    end = data.rfind(b"\n") + 1
    entries = []
    for line in data[:end].splitlines():
        if settled_only and line.startswith(RESERVATION_START):
            continue
        try:
            entry = orjson.loads(line)
            if entry.get("kind") in (RESERVE, SETTLE) and entry.get("entry_id"):
                entries.append(entry)
                continue
        except (orjson.JSONDecodeError, AttributeError):
            pass
        log.warning("usage_journal_line_skipped", length=len(line))
    return entries, end


class Shipper:
    """Ships the journal into the ledger table every `interval_s`."""

    def __init__(self, journal: Journal, engine: AsyncEngine, *, interval_s: float) -> None:
        self.journal = journal
        self.engine = engine
        self.interval_s = interval_s
        self.caught_up_at = time.monotonic()
        self._failures = 0

    def lag(self) -> tuple[int, float]:
        """(journal bytes not yet shipped, seconds since everything was last shipped)."""
        pending = self.journal.pending_bytes()
        if pending == 0:
            self.caught_up_at = time.monotonic()
        return pending, time.monotonic() - self.caught_up_at

    async def run(self) -> None:
        """Ship until cancelled; a failure waits a backoff and retries the same entries."""
        while True:
            try:
                await self.ship()
                if self._failures:
                    log.info("usage_shipping_resumed")
                self._failures = 0
                delay = self.interval_s
            except Exception as exc:
                if not self._failures:
                    log.warning("usage_shipping_failed", reason=failure_reason(exc))
                self._failures += 1
                delay = min(self.interval_s * 2**self._failures, MAX_BACKOFF_S)
            await asyncio.sleep(delay)

    async def ship(self) -> int:
        """Ship what has been written since the last time, and any dead process's segments;
        the number of entries stored (duplicates included)."""
        return await self.ship_own() + await self.ship_orphans()

    async def ship_own(self) -> int:
        """This process's settled entries; a finished segment is deleted."""
        shipped = 0
        for segment in list(self.journal.segments):
            shipped += await self._ship_segment(segment)
            if (
                segment is not self.journal.segments[-1]
                and segment.is_shipped
                and segment.open_reservations == 0
            ):
                self.journal.retire(segment)
        self.lag()
        return shipped

    async def _ship_segment(self, segment: Segment) -> int:
        """What the segment held when called, in batches of at most READ_BYTES. Entries
        written meanwhile wait for the next round: chasing them under load would ship a few
        rows per transaction, back to back, and cost the event loop far more than the rows."""
        shipped, end = 0, segment.size
        while segment.shipped < end:
            size = min(end - segment.shipped, READ_BYTES)
            with segment.path.open("rb") as file:
                file.seek(segment.shipped)
                data = file.read(size)
            entries, used = parse(data, settled_only=True)
            if used == 0:  # one line longer than a batch: cannot happen for the gateway's lines
                break
            await self.store(entry for entry in entries if entry["kind"] == SETTLE)
            segment.shipped += used
            shipped += len(entries)
        if segment.is_shipped:
            segment.first_unshipped_at = None
        return shipped

    async def ship_orphans(self) -> int:
        """Segments of processes that have died: shipped whole, then deleted."""
        groups: defaultdict[str, list[Path]] = defaultdict(list)
        for path in sorted(self.journal.directory.glob(f"*{SUFFIX}")):
            if owner_of(path) != self.journal.owner:
                groups[owner_of(path)].append(path)
        shipped = 0
        for paths in groups.values():
            shipped += await self._ship_dead(paths)
        return shipped

    async def _ship_dead(self, paths: list[Path]) -> int:
        """One dead owner's segments, if every one of them can be locked (a live process
        always holds its current segment's lock)."""
        fds: list[int] = []
        try:
            for path in paths:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:  # retired by its live owner meanwhile
                    return 0
                fds.append(fd)
                if not lock(fd):
                    return 0
            entries = [entry for path in paths for entry in parse(path.read_bytes())[0]]
            await self.store(settled(entries))
            for path in paths:
                path.unlink(missing_ok=True)
            log.info("usage_journal_recovered", segments=len(paths), entries=len(entries))
            return len(entries)
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def store(self, entries: Iterable[dict[str, Any]]) -> None:
        """Insert the entries' rows, each entry id once whatever was stored before."""
        rows = [row for row in map(checked_row, entries) if row is not None]
        if not rows:
            return
        is_postgresql = self.engine.dialect.name == "postgresql"
        async with self.engine.begin() as connection:
            for start in range(0, len(rows), ROWS_PER_INSERT):
                chunk = rows[start : start + ROWS_PER_INSERT]
                if is_postgresql:
                    await connection.execute(insert_ignoring_duplicates(self.engine), chunk)
                else:
                    await insert_sqlite(connection, chunk)


def settled(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A dead process's entries as they end: each settled entry, and an `interrupted` one for
    each reservation that was never settled."""
    done = {entry["entry_id"] for entry in entries if entry["kind"] == SETTLE}
    return [entry for entry in entries if entry["kind"] == SETTLE] + [
        interrupted(entry)
        for entry in entries
        if entry["kind"] == RESERVE and entry["entry_id"] not in done
    ]
