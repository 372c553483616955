"""LedgerWriter: reads journal segments back and inserts their entries into the ledger table,
in a process of its own.

Reading a journal line back (a JSON array, its values checked against their columns) and
binding its values to an INSERT cost about 10 µs of CPU per entry. In the serving process that
is the event loop's time, taken from requests (about 5% of the throughput of short requests). So
the shipper (usage/shipper.py), which decides what to ship and keeps the journal's offsets,
hands each range of a segment to this writer, which reads and stores it in a child process
(`python -m ai_gateway.usage.writer`, one per gateway process, started with the first range)
and answers with how far it got: one JSON line each way per range, over the child's standard
input and output. The database URL goes over the pipe too, never on a command line. The child
runs in a session of its own and ignores SIGINT and SIGTERM (a Ctrl-C in a terminal, or a
service manager signalling the whole group, is the gateway's to handle, and its shutdown still
ships through the child), logs to the gateway's standard error, and ends at the end of its
input: when the gateway closes it, or dies. A child that dies, or a request cut
short, ends the child; the next range starts a new one.

Nothing about the guarantees changes: the journal files are the record, inserts are idempotent
by entry id, and the shipper moves its offsets only once a range is committed.

An in-memory SQLite database cannot be opened by another process: its writer stores in the
serving process, through the same Store.
"""

import asyncio
import contextlib
import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import structlog
from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.collector import tune_collector
from ai_gateway.db.engine import create_engine, failure_reason, is_sqlite
from ai_gateway.helper_process import command, greeted, hello
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
from ai_gateway.usage.tables import ledger

MODULE = "ai_gateway.usage.writer"
"""This module, as its helper process runs it (`python -m`: its `__name__` is then `__main__`)."""

log = structlog.get_logger(__name__)

READ_BYTES = 1024 * 1024
"""The most journal bytes read for one batch."""
SETTLED, RECOVERED = "settled", "recovered"
RESULT, ERROR = "result", "error"
CLOSE_TIMEOUT_S = 10.0
"""How long a closing writer waits for its child to end (its database's pool closed) before it
kills it."""
ANSWER_LIMIT = 64 * 1024
"""The longest answer line the gateway reads from the child (its answers are a few bytes)."""
ROWS_PER_INSERT = 512
"""Rows per statement: 512 x 22 columns stays under both databases' bound-parameter limits
(SQLite 32,766, PostgreSQL 32,767)."""


class LedgerUnwritable(Exception):
    """Storing failed, in the database driver's words (the child's own exception may not
    cross processes whole)."""


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


class Store:
    """Inserts into the ledger table through one engine (in whichever process holds it)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._times = SqliteTimes()

    async def settled(self, path: Path, start: int, end: int) -> tuple[int, int]:
        """A live segment's settled entries from `start` to `end`, a batch (one transaction)
        at a time: (the offset reached, entries read)."""
        reached, entries = start, 0
        for batch, offset in batches(path, start, end, settled_only=True):
            await self.rows([entry.values for entry in batch if entry.kind == SETTLE])
            reached, entries = offset, entries + len(batch)
        return reached, entries

    async def recovered(self, paths: list[Path]) -> int:
        """A dead owner's segments, a batch at a time (however large its backlog, one batch is
        held): first every settled entry, then every reservation as `interrupted`, which the
        insert drops for each entry id already stored settled (so an interrupted row never
        takes the place of a settled one). Each batch is its own transaction; a crash meanwhile
        leaves the files for the next recovery, which stores nothing twice. The entries read."""
        entries = 0
        for path in paths:
            for batch, _ in batches(path):
                await self.rows([entry.values for entry in batch if entry.kind == SETTLE])
                entries += len(batch)
        for path in paths:
            for batch, _ in batches(path):
                reservations = [entry.values for entry in batch if entry.kind == RESERVE]
                await self.rows([interrupted(values) for values in reservations])
        return entries

    async def rows(self, rows: list[list[Any]]) -> None:
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
                # cost far more than the insert itself; SQLAlchemy's own multi-row VALUES
                # compiles too slowly for a batch.
                params = tuple(self._times.flattened(chunk))
                await connection.exec_driver_sql(sqlite_insert(size), params)


def pipes(child: asyncio.subprocess.Process) -> tuple[asyncio.StreamWriter, asyncio.StreamReader]:
    """The child's input and output."""
    if child.stdin is None or child.stdout is None:  # started with both: cannot happen
        raise LedgerUnwritable("the ledger writer's process has no pipes")
    return child.stdin, child.stdout


def is_in_memory(url: str) -> bool:
    """Whether the URL names an in-memory SQLite database (one process's own)."""
    return is_sqlite(url) and make_url(url).database in (None, "", ":memory:")


class LedgerWriter:
    """Stores journal ranges: in a child process for a database URL, or through an engine of
    this process (an in-memory SQLite database; tests)."""

    def __init__(
        self,
        *,
        url: str | None = None,
        engine: AsyncEngine | None = None,
        log_level: str = "info",
        log_format: str = "json",
    ) -> None:
        if (url is None) == (engine is None):
            raise ValueError("a LedgerWriter stores through a URL or an engine, one of them")
        self._hello = hello(url=url, log_level=log_level, log_format=log_format)
        self._local = Store(engine) if engine is not None else None
        self._child: asyncio.subprocess.Process | None = None
        self._turn = asyncio.Lock()

    @classmethod
    def for_url(
        cls, url: str, engine: AsyncEngine, *, log_level: str, log_format: str
    ) -> "LedgerWriter":
        """The writer of a gateway: a child process, unless the database is in memory."""
        if is_in_memory(url):
            return cls(engine=engine)
        return cls(url=url, log_level=log_level, log_format=log_format)

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return None if self._child is None else self._child.pid

    async def settled(self, path: Path, start: int, end: int) -> tuple[int, int]:
        """Store a live segment's settled entries from `start` to `end`: (offset, entries)."""
        if self._local is not None:
            return await self._local.settled(path, start, end)
        offset, entries = await self._ask(SETTLED, str(path), start, end)
        return int(offset), int(entries)

    async def recovered(self, paths: list[Path]) -> int:
        """Store a dead owner's segments whole (see Store.recovered): the entries read."""
        if self._local is not None:
            return await self._local.recovered(paths)
        return int(await self._ask(RECOVERED, [str(path) for path in paths]))

    async def _ask(self, method: str, *args: Any) -> Any:
        """One request to the child, started if it is not running, and its answer. A request
        cut short (cancelled, or the child died) ends the child: its answer would otherwise
        be read as the next request's."""
        async with self._turn:
            requests, answers = pipes(self._child or await self._start())
            try:
                requests.write(orjson.dumps([method, *args]) + b"\n")
                await requests.drain()
                line = await answers.readline()
            except BaseException:
                await self._end(kill=True)
                raise
            if not line:
                await self._end(kill=True)
                raise LedgerUnwritable("the ledger writer's process ended")
        answer = orjson.loads(line)
        if ERROR in answer:
            raise LedgerUnwritable(answer[ERROR])
        return answer[RESULT]

    async def _start(self) -> asyncio.subprocess.Process:
        # As every helper process (helper_process.py): its own session, the gateway's stderr.
        child = await asyncio.create_subprocess_exec(
            *command(MODULE),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=ANSWER_LIMIT,
        )
        self._child = child
        pipes(child)[0].write(self._hello)
        return child

    async def _end(self, *, kill: bool) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if not kill and child.stdin is not None:
            child.stdin.close()  # the child ends at the end of its input
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), CLOSE_TIMEOUT_S)
        if child.returncode is None:  # to be ended now, or not ended in time
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                child.kill()
        await child.wait()

    async def close(self) -> None:
        """End the child (after the range it is storing, if any)."""
        async with self._turn:
            await self._end(kill=False)


def serve(first: dict[str, Any], requests: BinaryIO, answers: BinaryIO) -> None:
    """The child's loop: one request per line of `requests`, one answer per line of
    `answers`, until the input ends (the gateway closed it, or died)."""
    loop = asyncio.new_event_loop()
    store = Store(create_engine(first["url"]))
    tune_collector()  # as the serving process's: a range's rows are many short-lived objects
    try:
        for line in requests:
            method, *args = orjson.loads(line)
            try:
                answer = {RESULT: loop.run_until_complete(run(store, method, args))}
            except Exception as exc:
                answer = {ERROR: failure_reason(exc)}
            answers.write(orjson.dumps(answer) + b"\n")
            answers.flush()
    except BrokenPipeError:  # the gateway died while this child answered
        pass
    finally:
        loop.run_until_complete(store.engine.dispose())
        loop.close()


async def run(store: Store, method: str, args: list[Any]) -> Any:
    """One request of the gateway's, as Store calls."""
    if method == SETTLED:
        path, start, end = args
        return await store.settled(Path(path), start, end)
    if method == RECOVERED:
        return await store.recovered([Path(path) for path in args[0]])
    raise ValueError(f"not a ledger writer request: {method!r}")


def main() -> None:
    """`python -m ai_gateway.usage.writer`: the child process, started by LedgerWriter."""
    serve(greeted(MODULE, needs="url"), sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
