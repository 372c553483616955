"""The journal and the shipper, on both databases: a live process's settled entries are
shipped as they are written; a dead process's segments are shipped whole, their unsettled
reservations as `interrupted` entries; shipping twice stores each entry once; a database that
cannot be reached loses nothing; a full journal refuses new requests."""

import errno
import fcntl
import mmap
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.db.engine import create_engine, database_url, failure_reason
from ai_gateway.db.migrations import ensure_schema
from ai_gateway.usage import writer as writer_module
from ai_gateway.usage.entry import RESERVE, RESERVED_COLUMNS, SETTLE, Entry, line_of
from ai_gateway.usage.journal import Journal, JournalFull, JournalUnwritable
from ai_gateway.usage.shipper import Shipper
from ai_gateway.usage.tables import ledger
from ai_gateway.usage.writer import LedgerUnwritable, LedgerWriter
from tests.db.databases import KINDS, fresh_database, opened
from tests.usage.ledger_rows import ledger_rows

pytestmark = pytest.mark.anyio


def journal(directory: Path, **overrides: Any) -> Journal:
    values: dict[str, Any] = {"fsync": False, "segment_bytes": 1 << 20, "max_bytes": 0}
    return Journal(directory, **(values | overrides))


RESERVED = Entry(
    entry_id="",
    request_id="",
    created_at=1_790_000_000.5,
    key_id="key-1",
    team="team-1",
    route="fast",
    provider=None,
    model=None,
    status=None,
    http_status=None,
    error_code=None,
    is_stream=True,
    attempts=None,
    prompt_tokens=None,
    completion_tokens=None,
    cached_tokens=None,
    reasoning_tokens=None,
    cost_usd=None,
    reserved_tokens=1030,
    reserved_cost_usd=0.002,
    latency_ms=None,
    ttft_ms=None,
)
SETTLED = RESERVED._replace(
    provider="cerebras",
    model="llama3.1-8b",
    status="200",
    http_status=200,
    attempts=1,
    prompt_tokens=6,
    completion_tokens=20,
    cost_usd=0.0000026,
    latency_ms=12.5,
    ttft_ms=3.25,
)


def reservation(entry_id: str, **fields: Any) -> bytes:
    entry = RESERVED._replace(entry_id=entry_id, request_id=f"req-{entry_id}", **fields)
    return line_of(RESERVE, entry[:RESERVED_COLUMNS], entry[RESERVED_COLUMNS:])


def settlement(entry_id: str, **fields: Any) -> bytes:
    entry = SETTLED._replace(entry_id=entry_id, request_id=f"req-{entry_id}", **fields)
    return line_of(SETTLE, entry[:RESERVED_COLUMNS], entry[RESERVED_COLUMNS:])


@pytest.fixture(params=KINDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(request.param, tmp_path) as url, opened(url) as engine:
        await ensure_schema(engine, is_sqlite=True)  # creates the schema on either backend
        yield url


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    async with opened(database) as opened_engine:
        yield opened_engine


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["entry_id"]: row for row in rows}


async def test_a_live_process_ships_its_settled_entries_and_keeps_its_reservations(
    tmp_path: Path, engine: AsyncEngine, database: str
) -> None:
    own = journal(tmp_path / "j")
    own.reserve("a", reservation("a"))
    own.reserve("b", reservation("b"))
    own.settle("a", settlement("a"))
    shipper = Shipper(own, LedgerWriter(engine=engine), interval_s=1)

    assert await shipper.ship() == 1  # the settled entry; the reservations stay unread

    rows = by_id(await ledger_rows(database))
    assert list(rows) == ["a"]  # b is still in flight: not `interrupted`
    assert rows["a"]["status"] == "200"
    assert rows["a"]["created_at"].timestamp() == 1_790_000_000.5
    assert shipper.lag()[0] == 0
    own.settle("b", settlement("b", status="499", http_status=499, error_code="client_closed"))
    await shipper.ship()
    assert by_id(await ledger_rows(database))["b"]["error_code"] == "client_closed"


def command_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


async def test_the_writer_s_own_process_ships_live_entries_and_recovers_dead_ones(
    tmp_path: Path, database: str
) -> None:
    dead = journal(tmp_path / "j", segment_bytes=300)
    for entry_id in ("a", "b"):
        dead.reserve(entry_id, reservation(entry_id))
    dead.settle("a", settlement("a"))
    dead.close()  # as a crash would: b never settled
    own = journal(tmp_path / "j")
    own.reserve("c", reservation("c"))
    own.settle("c", settlement("c"))
    own.reserve("d", reservation("d"))
    writer = LedgerWriter(url=database_url(database))
    shipper = Shipper(own, writer, interval_s=1)
    try:
        assert await shipper.ship() == 1 + 3  # c; then the dead one's a, b and a's settle
        child = writer.pid
        assert child is not None
        assert child != os.getpid()
        # this interpreter and the module, nothing more: the URL went over the pipe
        assert command_of(child).split(" ")[1:] == ["-m", "ai_gateway.usage.writer"]
    finally:
        await writer.close()
    assert writer.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # closed: the child has ended

    rows = by_id(await ledger_rows(database))
    assert {entry_id: row["status"] for entry_id, row in rows.items()} == {
        "a": "200",
        "b": "interrupted",
        "c": "200",
    }
    assert sorted(path.name for path in (tmp_path / "j").iterdir()) == [own.segments[0].path.name]


async def test_a_writer_whose_process_dies_or_gets_ctrl_c_goes_on_with_a_new_one(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    async with opened(url) as engine:
        await ensure_schema(engine, is_sqlite=True)
    own = journal(tmp_path / "j")
    writer = LedgerWriter(url=database_url(url))
    shipper = Shipper(own, writer, interval_s=1)
    try:
        own.settle("a", settlement("a"))
        assert await shipper.ship() == 1
        child = writer.pid
        assert child is not None
        assert os.getsid(child) != os.getsid(0)  # a Ctrl-C in a terminal does not reach it
        os.kill(child, signal.SIGINT)  # nor does one sent to it
        os.kill(child, signal.SIGTERM)  # nor a service manager's signal to the whole group
        own.settle("b", settlement("b"))
        assert await shipper.ship() == 1
        assert writer.pid == child
        os.kill(child, signal.SIGKILL)
        own.settle("c", settlement("c"))
        with pytest.raises(LedgerUnwritable, match="process ended"):
            await shipper.ship()
        assert shipper.lag()[0] > 0  # c waits in the journal
        assert await shipper.ship() == 1  # a new child
        assert writer.pid not in (None, child)
    finally:
        await writer.close()
    assert sorted(by_id(await ledger_rows(url))) == ["a", "b", "c"]


async def test_a_writer_s_process_that_does_not_end_when_closed_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "CLOSE_TIMEOUT_S", 0.2)
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    async with opened(url) as engine:
        await ensure_schema(engine, is_sqlite=True)
    own = journal(tmp_path / "j")
    own.settle("a", settlement("a"))
    writer = LedgerWriter(url=database_url(url))
    assert await Shipper(own, writer, interval_s=1).ship() == 1
    child = writer.pid
    assert child is not None
    os.kill(child, signal.SIGSTOP)  # as a child stuck on its database would be

    await writer.close()

    assert writer.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


async def test_a_writer_s_process_reports_what_its_database_said(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet" / "gateway.db"
    own = journal(tmp_path / "j")
    own.settle("a", settlement("a"))
    writer = LedgerWriter(url=database_url(f"sqlite:///{missing}"))
    try:
        with pytest.raises(LedgerUnwritable, match=r"^unable to open database file$"):
            await Shipper(own, writer, interval_s=1).ship()
    finally:
        await writer.close()


async def test_a_dead_process_s_segments_are_shipped_whole_with_its_interrupted_requests(
    tmp_path: Path, engine: AsyncEngine, database: str
) -> None:
    dead = journal(tmp_path / "j", segment_bytes=300)  # small: its entries span several segments
    for entry_id in ("a", "b", "c", "d"):
        dead.reserve(entry_id, reservation(entry_id))
    dead.settle("a", settlement("a"))
    dead.settle("c", settlement("c", completion_tokens=1))
    assert len(dead.segments) > 1
    dead.close()  # as a crash would: its files unlocked, reservations b and d never settled
    survivor = journal(tmp_path / "j")

    await Shipper(survivor, LedgerWriter(engine=engine), interval_s=1).ship()

    rows = by_id(await ledger_rows(database))
    assert sorted(rows) == ["a", "b", "c", "d"]
    assert (rows["a"]["status"], rows["c"]["completion_tokens"]) == ("200", 1)
    for entry_id in ("b", "d"):
        assert rows[entry_id]["status"] == "interrupted"
        assert rows[entry_id]["http_status"] is None
        assert rows[entry_id]["reserved_tokens"] == 1030
        assert rows[entry_id]["cost_usd"] == rows[entry_id]["reserved_cost_usd"] == 0.002
        assert rows[entry_id]["prompt_tokens"] is None
    assert list((tmp_path / "j").iterdir()) == []


async def test_a_dead_process_s_backlog_is_recovered_a_batch_at_a_time(
    tmp_path: Path, engine: AsyncEngine, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "READ_BYTES", 400)  # two or three lines per batch
    dead = journal(tmp_path / "j", segment_bytes=700)
    for n in range(12):
        dead.reserve(f"r{n}", reservation(f"r{n}"))
    for n in range(0, 12, 2):  # settled long after their reservations, in later segments
        dead.settle(f"r{n}", settlement(f"r{n}"))
    assert len(dead.segments) > 2
    dead.close()

    await Shipper(journal(tmp_path / "j"), LedgerWriter(engine=engine), interval_s=1).ship()

    rows = by_id(await ledger_rows(database))
    assert {entry_id: row["status"] for entry_id, row in rows.items()} == {
        f"r{n}": "200" if n % 2 == 0 else "interrupted" for n in range(12)
    }
    assert list((tmp_path / "j").iterdir()) == []


async def test_a_segment_a_dead_process_was_opening_is_removed_and_a_live_one_s_kept(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    directory = tmp_path / "j"
    directory.mkdir()
    abandoned = directory / "1-dead.000001.jsonl.new"
    abandoned.write_bytes(bytes(4096))
    opening = directory / "2-live.000001.jsonl.new"
    opening.write_bytes(b"")
    fd = os.open(opening, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # its process is still naming it
        await Shipper(journal(directory), LedgerWriter(engine=engine), interval_s=1).ship()
    finally:
        os.close(fd)

    assert sorted(path.name for path in directory.iterdir()) == [opening.name]


async def test_a_live_process_s_segments_are_left_to_it(
    tmp_path: Path, engine: AsyncEngine, database: str
) -> None:
    alive = journal(tmp_path / "j")
    alive.reserve("a", reservation("a"))
    other = journal(tmp_path / "j")

    assert await Shipper(other, LedgerWriter(engine=engine), interval_s=1).ship_orphans() == 0
    assert await ledger_rows(database) == []
    alive.settle("a", settlement("a"))
    alive.close()
    assert await Shipper(other, LedgerWriter(engine=engine), interval_s=1).ship_orphans() == 2
    assert [row["status"] for row in await ledger_rows(database)] == ["200"]


async def test_shipping_the_same_entries_again_stores_each_once(
    tmp_path: Path, engine: AsyncEngine, database: str
) -> None:
    dead = journal(tmp_path / "journal")
    dead.reserve("a", reservation("a"))
    dead.settle("a", settlement("a"))
    dead.reserve("b", reservation("b"))
    dead.close()
    shutil.copytree(tmp_path / "journal", tmp_path / "copy")
    shipper = Shipper(journal(tmp_path / "journal"), LedgerWriter(engine=engine), interval_s=1)
    await shipper.ship()
    shutil.copytree(tmp_path / "copy", tmp_path / "journal", dirs_exist_ok=True)

    await shipper.ship()  # as after a crash between the commit and the files' removal

    rows = await ledger_rows(database)
    assert sorted((row["entry_id"], row["status"]) for row in rows) == [
        ("a", "200"),
        ("b", "interrupted"),
    ]


async def test_a_torn_last_line_is_skipped_and_the_rest_shipped(
    tmp_path: Path, engine: AsyncEngine, database: str
) -> None:
    dead = journal(tmp_path / "j")
    dead.reserve("a", reservation("a"))
    dead.settle("a", settlement("a"))
    path = dead.segments[0].path
    dead.close()
    with path.open("ab") as file:
        file.write(b"not json\n" + settlement("z")[:40])  # a line cut by a power loss

    await Shipper(journal(tmp_path / "j"), LedgerWriter(engine=engine), interval_s=1).ship()

    assert [row["entry_id"] for row in await ledger_rows(database)] == ["a"]


async def test_a_database_that_cannot_be_reached_loses_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet" / "gateway.db"
    unreachable = create_engine(database_url(f"sqlite:///{missing}"))
    own = journal(tmp_path / "journal")
    own.reserve("a", reservation("a"))
    own.settle("a", settlement("a"))
    shipper = Shipper(own, LedgerWriter(engine=unreachable), interval_s=1)
    try:
        with pytest.raises(Exception, match="unable to open database file"):
            await shipper.ship()
        assert shipper.lag()[0] > 0

        missing.parent.mkdir()
        await ensure_schema(unreachable)
        await shipper.ship()
    finally:
        await unreachable.dispose()

    assert [row["entry_id"] for row in await ledger_rows(f"sqlite:///{missing}")] == ["a"]
    assert shipper.lag()[0] == 0


def test_a_full_journal_refuses_new_reservations_until_shipped(tmp_path: Path) -> None:
    own = journal(tmp_path / "j", max_bytes=250)
    own.reserve("a", reservation("a"))
    own.reserve("b", reservation("b"))

    with pytest.raises(JournalFull) as refused:
        own.reserve("c", reservation("c"))

    assert (refused.value.status_code, refused.value.code) == (503, "usage_journal_full")
    own.segments[0].shipped = own.segments[0].size
    own.reserve("c", reservation("c"))


def test_segments_roll_over_and_each_stays_until_its_reservations_settle(tmp_path: Path) -> None:
    own = journal(tmp_path / "j", segment_bytes=100)
    own.reserve("a", reservation("a"))
    own.reserve("b", reservation("b"))  # the first segment is full: b starts the second

    assert [segment.open_reservations for segment in own.segments] == [1, 1]
    own.settle("a", settlement("a"))
    assert [segment.open_reservations for segment in own.segments] == [
        0,
        1,
        0,
    ]  # the settle itself starts a third


async def test_values_too_long_or_too_large_for_their_columns_are_cut_not_refused(
    tmp_path: Path, engine: AsyncEngine, database: str
) -> None:
    own = journal(tmp_path / "j")
    own.reserve("a", reservation("a"))
    own.settle(
        "a",
        settlement(
            "a",
            error_code="x" * 1000,
            model="m" * 900,
            completion_tokens=10**15,
            route="cerebras/bad\x00model",
        ),
    )

    await Shipper(own, LedgerWriter(engine=engine), interval_s=1).ship()

    (row,) = await ledger_rows(database)
    assert row["error_code"] == "x" * 64
    assert row["model"] == "m" * 256
    assert row["completion_tokens"] == 2**31 - 1
    assert row["route"] == "cerebras/bad\ufffdmodel"  # PostgreSQL's text takes no NUL


def test_a_refused_reservation_leaves_the_request_unaccounted(tmp_path: Path) -> None:
    from ai_gateway.api.record import RequestRecord
    from ai_gateway.routing.route import Deployment, Policy, Route, Timeouts
    from ai_gateway.usage.ledger import Ledger
    from tests.fakes import FakeProvider, chat_request

    class Free:
        def cost(self, *_: Any) -> float | None:
            return None

        def max_cost(self, *_: Any) -> float | None:
            return None

    full = journal(tmp_path / "j", max_bytes=1)
    full.reserve("a", reservation("a"))
    ledger = Ledger(full, Free(), default_completion_tokens=16)
    route = Route("r", (Deployment(FakeProvider(), "m", timeouts=Timeouts()),), Policy())
    record = RequestRecord("req-1", "POST", "/v1/chat/completions")

    with pytest.raises(JournalFull):
        ledger.reserve(record, route, chat_request())

    assert record.entry_id is None
    ledger.settle(record)
    assert full.segments[0].size == len(reservation("a"))  # nothing more was written


def test_a_segment_the_disk_has_no_room_for_refuses_the_entry_and_the_next_one_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = journal(tmp_path / "j", segment_bytes=1)  # every entry opens a segment of its own
    own.reserve("a", reservation("a"))
    real_allocate = os.posix_fallocate

    def full_disk(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    with pytest.raises(JournalUnwritable):
        own.settle("a", settlement("a"))
    assert [path.name.endswith(".jsonl") for path in (tmp_path / "j").iterdir()] == [True]
    monkeypatch.setattr(os, "posix_fallocate", real_allocate)
    own.settle("a", settlement("a"))
    own.close()

    lines = b"".join(path.read_bytes() for path in sorted((tmp_path / "j").iterdir()))
    assert [orjson.loads(line)[0] for line in lines.splitlines()] == ["reserve", "settle"]


def test_without_fallocate_a_segment_s_zeros_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    own = journal(tmp_path / "j", segment_bytes=3 * 1024 * 1024 + 5)
    own.reserve("a", reservation("a"))
    path = own.segments[0].path

    assert path.stat().st_blocks * 512 >= 3 * 1024 * 1024  # blocks, not a sparse file
    own.close()
    assert path.read_bytes() == reservation("a")


class FlushSpy:
    """A segment's mapping whose flushes are noted (and fail, when asked)."""

    def __init__(self, view: mmap.mmap, *, fails: bool = False) -> None:
        self.view, self.fails = view, fails
        self.flushed: list[tuple[int, int]] = []
        self.closed = False

    def __setitem__(self, key: Any, value: Any) -> None:
        self.view[key] = value

    def flush(self, offset: int, size: int) -> None:
        if self.fails:
            raise OSError(errno.EIO, "Input/output error")
        self.flushed.append((offset, offset + size))
        self.view.flush(offset, size)

    def close(self) -> None:
        self.closed = True
        self.view.close()


def test_with_fsync_each_entry_s_pages_are_flushed(tmp_path: Path) -> None:
    own = journal(tmp_path / "j", fsync=True)
    own.reserve("e0", reservation("e0"))
    segment = own.segments[0]
    spy = FlushSpy(segment.view)
    segment.view = spy  # type: ignore[assignment]
    entries = []
    for index in range(1, 30):  # past the first page: a flush starts at a page's boundary
        start = segment.size
        own.reserve(f"e{index}", reservation(f"e{index}"))
        entries.append((start, segment.size))

    assert segment.size > mmap.PAGESIZE
    assert len(spy.flushed) == len(entries)
    for (start, end), (first, last) in zip(entries, spy.flushed, strict=True):
        assert first % mmap.PAGESIZE == 0
        assert first <= start
        assert last == end


def test_an_entry_that_cannot_be_flushed_is_refused_and_wiped(tmp_path: Path) -> None:
    own = journal(tmp_path / "j", fsync=True)
    own.reserve("a", reservation("a"))
    segment = own.segments[0]
    segment.view = FlushSpy(segment.view, fails=True)  # type: ignore[assignment]

    with pytest.raises(JournalUnwritable):
        own.reserve("refused", reservation("refused"))

    assert segment.size == len(reservation("a"))
    assert segment.path.read_bytes().rstrip(b"\0") == reservation("a")  # nothing after it


async def test_a_killed_process_s_segment_zeros_and_a_torn_entry_are_not_read(
    tmp_path: Path, engine: AsyncEngine, database: str
) -> None:
    dead = journal(tmp_path / "j")
    dead.reserve("a", reservation("a"))
    dead.settle("a", settlement("a"))
    dead.reserve("b", reservation("b"))
    segment = dead.segments[0]
    torn = settlement("b")[:40]
    segment.view[segment.size : segment.size + len(torn)] = torn  # killed mid-copy
    assert segment.closer is not None
    segment.closer()  # as a kill: unmapped and closed, not cut to its entries

    assert segment.path.stat().st_size == 1 << 20
    await Shipper(journal(tmp_path / "j"), LedgerWriter(engine=engine), interval_s=1).ship()

    rows = by_id(await ledger_rows(database))
    assert {entry_id: row["status"] for entry_id, row in rows.items()} == {
        "a": "200",
        "b": "interrupted",
    }


def test_a_segment_no_longer_appended_to_is_unmapped_and_cut_to_its_entries(
    tmp_path: Path,
) -> None:
    own = journal(tmp_path / "j", segment_bytes=1)  # every entry opens a segment of its own
    own.reserve("a", reservation("a"))
    own.reserve("b", reservation("b"))

    first, second = own.segments
    assert first.view.closed
    assert first.path.read_bytes() == reservation("a")
    assert not second.view.closed


def test_an_entry_is_in_the_file_once_appended_and_a_closed_segment_holds_only_entries(
    tmp_path: Path,
) -> None:
    own = journal(tmp_path / "j")
    own.reserve("a", reservation("a"))
    path = own.segments[0].path

    assert path.stat().st_size == 1 << 20  # allocated whole, zeros after the entry
    assert path.read_bytes().rstrip(b"\0") == reservation("a")  # read by another file handle
    own.close()
    assert path.read_bytes() == reservation("a")


async def test_a_damaged_entry_is_skipped_and_the_rest_shipped(
    tmp_path: Path, engine: AsyncEngine, database: str
) -> None:
    dead = journal(tmp_path / "j")
    dead.settle("x", orjson.dumps(["settle", "x"]) + b"\n")  # cut short
    dead.settle("y", settlement("y", created_at="yesterday"))  # edited
    dead.settle("z", settlement("z", created_at=1e300))  # past any datetime
    dead.settle("w", settlement("w", cost_usd=7))  # an integer where a float belongs
    dead.settle("q", orjson.dumps([["settle"], {"kind": 1}]) + b"\n")  # no kind at all
    dead.settle("a", settlement("a"))
    dead.close()

    await Shipper(journal(tmp_path / "j"), LedgerWriter(engine=engine), interval_s=1).ship()

    assert [row["entry_id"] for row in await ledger_rows(database)] == ["a"]


async def test_an_earlier_version_s_keyed_lines_are_recovered(
    tmp_path: Path, engine: AsyncEngine, database: str
) -> None:
    def keyed(kind: str, entry: Entry) -> bytes:
        fields = entry._asdict()
        if kind == RESERVE:
            fields = {name: fields[name] for name in Entry._fields[:RESERVED_COLUMNS]}
        return orjson.dumps({"kind": kind, **fields}) + b"\n"

    dead = journal(tmp_path / "j")
    dead.reserve("a", keyed(RESERVE, RESERVED._replace(entry_id="a", request_id="req-a")))
    dead.settle("a", keyed(SETTLE, SETTLED._replace(entry_id="a", request_id="req-a")))
    dead.reserve("b", keyed(RESERVE, RESERVED._replace(entry_id="b", request_id="req-b")))
    dead.close()

    await Shipper(journal(tmp_path / "j"), LedgerWriter(engine=engine), interval_s=1).ship()

    rows = by_id(await ledger_rows(database))
    assert (rows["a"]["status"], rows["a"]["completion_tokens"]) == ("200", 20)
    assert (rows["b"]["status"], rows["b"]["cost_usd"]) == ("interrupted", 0.002)


def test_an_empty_driver_message_still_names_the_failure() -> None:
    assert failure_reason(TimeoutError()) == "TimeoutError"


def test_a_journal_line_holds_every_column_of_the_ledger_table_the_reservation_s_first() -> None:
    assert sorted(Entry._fields) == sorted(column.name for column in ledger.columns)
    entry = SETTLED._replace(entry_id="a", request_id="req-a")
    assert orjson.loads(settlement("a")) == [SETTLE, *entry]
    assert orjson.loads(reservation("a")) == [
        RESERVE,
        *RESERVED._replace(entry_id="a", request_id="req-a")[:RESERVED_COLUMNS],
        *[None] * (len(Entry._fields) - RESERVED_COLUMNS),
    ]
    assert None not in RESERVED[:RESERVED_COLUMNS]  # the reservation's columns come first


def test_a_batch_of_any_size_is_inserted_with_a_few_statements_each_prepared_once() -> None:
    sizes_used: set[int] = set()
    for rows in range(3 * writer_module.ROWS_PER_INSERT):
        sizes = list(writer_module.statement_sizes(rows))
        assert sum(sizes) == rows
        assert all(0 < size <= writer_module.ROWS_PER_INSERT for size in sizes)
        sizes_used.update(sizes)

    assert len(sizes_used) == 10  # 512, 256, ..., 1: the driver keeps each prepared
