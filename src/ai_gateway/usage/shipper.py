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
import functools
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.db.engine import failure_reason
from ai_gateway.usage.entry import (
    COLUMN_NAMES,
    RESERVATION_START,
    RESERVE,
    SETTLE,
    Parsed,
    SqliteTimes,
    as_mapping,
    interrupted,
    parse_line,
)
from ai_gateway.usage.journal import NEW_SUFFIX, SUFFIX, Journal, Segment, lock, owner_of
from ai_gateway.usage.tables import ledger

log = structlog.get_logger(__name__)

READ_BYTES = 1024 * 1024
"""The most journal bytes read for one batch."""
ROWS_PER_INSERT = 512
"""Rows per statement: 512 x 22 columns stays under both databases' bound-parameter limits
(SQLite 32,766, PostgreSQL 32,767)."""
MAX_BACKOFF_S = 30.0


def insert_ignoring_duplicates() -> Insert:
    """INSERT ... ON CONFLICT (entry_id) DO NOTHING, for PostgreSQL (run as asyncpg's
    executemany: one round trip for the batch)."""
    return postgresql.insert(ledger).on_conflict_do_nothing(index_elements=["entry_id"])


def statement_sizes(rows: int) -> Iterator[int]:
    """How many rows each statement of a batch takes: ROWS_PER_INSERT at a time, then what
    is left as powers of two. A batch of any size then uses some of ten statements: the driver
    keeps each prepared statement by its text (up to 128 of them, a few hundred KiB each for
    a long VALUES list), and one statement per remainder size grew the process by about
    10 MiB per 20,000 entries until that cache was full."""
    whole, rest = divmod(rows, ROWS_PER_INSERT)
    yield from [ROWS_PER_INSERT] * whole
    while rest:
        size = 1 << (rest.bit_length() - 1)  # the largest power of two in what is left
        yield size
        rest -= size


@functools.lru_cache(maxsize=16)
def sqlite_insert(rows: int) -> str:
    """One `INSERT OR IGNORE` of `rows` rows (a multi-row VALUES)."""
    row_marks = "(" + ", ".join("?" * len(COLUMN_NAMES)) + ")"
    # Only the table's own column names and placeholders: every value is a bound parameter.
    return (
        f"INSERT OR IGNORE INTO {ledger.name} ({', '.join(COLUMN_NAMES)}) VALUES "  # noqa: S608
        + ", ".join([row_marks] * rows)
    )


def parse(data: bytes, *, settled_only: bool = False) -> tuple[list[Parsed], int]:
    """The complete entries in `data` and how many bytes they span (a trailing partial line
    is left for later; a line that is not an entry, or holds values no column could store, is
    logged and skipped). `settled_only` skips reservations unread."""
    end = data.rfind(b"\n") + 1
    entries = []
    for line in data[:end].splitlines():
        if settled_only and line.startswith(RESERVATION_START):
            continue
        entry = parse_line(line)
        if entry is None:
            log.warning("usage_journal_entry_skipped", length=len(line))
        else:
            entries.append(entry)
    return entries, end


def batches(
    path: Path, start: int = 0, end: int | None = None, *, settled_only: bool = False
) -> Iterator[tuple[list[Parsed], int]]:
    """A segment's whole entries from `start` to `end` (its end when None), at most READ_BYTES
    of it at a time, each batch with the offset just past it (a torn last line is left out)."""
    offset = start
    with path.open("rb") as file:
        while end is None or offset < end:
            file.seek(offset)
            size = READ_BYTES if end is None else min(end - offset, READ_BYTES)
            entries, used = parse(file.read(size), settled_only=settled_only)
            if used == 0:  # no whole line left (or one longer than a batch: not the gateway's)
                return
            offset += used
            yield entries, offset


def remove_unfinished(path: Path) -> None:
    """Delete a hidden new segment whose lock can be taken: its process died between creating
    and naming it (a live process names it at once, holding its lock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # named or removed meanwhile
        return
    try:
        if lock(fd):
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


class Shipper:
    """Ships the journal into the ledger table every `interval_s`."""

    def __init__(self, journal: Journal, engine: AsyncEngine, *, interval_s: float) -> None:
        self.journal = journal
        self.engine = engine
        self.interval_s = interval_s
        self.caught_up_at = time.monotonic()
        self._failures = 0
        self._times = SqliteTimes()

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
        shipped = 0
        for entries, offset in batches(
            segment.path, segment.shipped, segment.size, settled_only=True
        ):
            await self.store([entry.values for entry in entries if entry.kind == SETTLE])
            segment.shipped = offset
            shipped += len(entries)
        if segment.is_shipped:
            segment.first_unshipped_at = None
        return shipped

    async def ship_orphans(self) -> int:
        """Segments of processes that have died: shipped whole, then deleted (and a segment a
        process died while opening, which holds no entry yet, deleted)."""
        groups: defaultdict[str, list[Path]] = defaultdict(list)
        for path in sorted(self.journal.directory.glob(f"*{SUFFIX}*")):
            if path.name.endswith(SUFFIX + NEW_SUFFIX):
                remove_unfinished(path)
            elif path.name.endswith(SUFFIX) and owner_of(path) != self.journal.owner:
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
            entries = await self._recover(paths)
            for path in paths:
                path.unlink(missing_ok=True)
            log.info("usage_journal_recovered", segments=len(paths), entries=entries)
            return entries
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _recover(self, paths: list[Path]) -> int:
        """A dead owner's entries, a batch at a time (however large its backlog, one batch is
        held): first every settled entry, then every reservation as `interrupted`, which the
        insert drops for each entry id already stored settled (so an interrupted row never
        takes the place of a settled one). Each batch is its own transaction; a crash meanwhile
        leaves the files for the next recovery, which stores nothing twice."""
        entries = 0
        for path in paths:
            for batch, _ in batches(path):
                await self.store([entry.values for entry in batch if entry.kind == SETTLE])
                entries += len(batch)
        for path in paths:
            for batch, _ in batches(path):
                reservations = [entry.values for entry in batch if entry.kind == RESERVE]
                await self.store([interrupted(values) for values in reservations])
        return entries

    async def store(self, rows: list[list[Any]]) -> None:
        """Insert the rows (values in column order), each entry id once whatever was stored
        before."""
        if not rows:
            return
        is_postgresql = self.engine.dialect.name == "postgresql"
        async with self.engine.begin() as connection:
            if is_postgresql:  # one prepared statement, run for every row: no sizes to vary
                for start in range(0, len(rows), ROWS_PER_INSERT):
                    chunk = rows[start : start + ROWS_PER_INSERT]
                    mappings = [as_mapping(values) for values in chunk]
                    await connection.execute(insert_ignoring_duplicates(), mappings)
                return
            start = 0
            for size in statement_sizes(len(rows)):
                chunk, start = rows[start : start + size], start + size
                # One statement, straight to the driver: SQLite's driver runs in a thread of
                # its own and takes the interpreter lock back once per statement, which per row
                # cost the event loop far more than the insert itself; SQLAlchemy's own
                # multi-row VALUES compiles too slowly for a batch.
                params = tuple(self._times.flattened(chunk))
                await connection.exec_driver_sql(sqlite_insert(size), params)
