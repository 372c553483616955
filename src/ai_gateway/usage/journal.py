"""Journal: the ledger's local, append-only write-ahead file, written on the request path.

Each process appends to its own segment files in one directory (`<owner>.<n>.jsonl`, the owner
being the process id and start time), holding an exclusive `flock` on each for as long as it
lives. One `write()` per entry to a file opened `O_APPEND`: once it returns, the entry survives
the process being killed (`kill -9`); with `fsync` on, it also survives a power loss, at the
cost of a disk flush per entry. A segment whose lock can be taken belongs to a process that
has died: the shipper (usage/shipper.py) ships it whole, turning reservations without a
settled entry into `interrupted` entries, then deletes it.

The journal is bounded: past `max_bytes` not yet shipped (the database is unreachable), new
requests are refused with a 503 rather than served without a record.
"""

import contextlib
import fcntl
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ai_gateway.errors import ServiceUnavailable

log = structlog.get_logger(__name__)

SUFFIX = ".jsonl"
NEW_SUFFIX = ".new"


class JournalRefusal(ServiceUnavailable):
    """A request refused because its usage could not be journaled."""


class JournalFull(JournalRefusal):
    """Too much usage waits to be shipped to the database: requests are refused until it is."""

    code = "usage_journal_full"


class JournalUnwritable(JournalRefusal):
    """The journal's file cannot be written (a full disk, a removed directory): requests are
    refused rather than served without a record."""

    code = "usage_journal_unwritable"


@dataclass(slots=True, weakref_slot=True)
class Segment:
    """One of this process's segment files."""

    path: Path
    fd: int
    size: int = 0
    """Bytes written."""
    shipped: int = 0
    """Bytes the shipper has read and stored."""
    open_reservations: int = 0
    """Reservations written here whose settled entry has not been written yet."""
    first_unshipped_at: float | None = field(default=None)
    closer: Callable[[], object] | None = None

    def release(self) -> None:
        """Close the file (and with it the lock)."""
        if self.closer is not None:
            self.closer()

    @property
    def is_shipped(self) -> bool:
        """Every byte written has been stored."""
        return self.shipped >= self.size


def owner_of(path: Path) -> str:
    """The owning process's part of a segment's file name."""
    return path.name.split(".", 1)[0]


def lock(fd: int) -> bool:
    """Take the segment's exclusive lock without waiting; False if another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Journal:
    """This process's segments: appends on the request path, read back by the shipper."""

    def __init__(self, directory: Path, *, fsync: bool, segment_bytes: int, max_bytes: int) -> None:
        self.directory = directory.absolute()  # the working directory may change later
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.owner = f"{os.getpid()}-{time.time_ns():x}"
        self.segments: list[Segment] = []
        self._reserved_in: dict[str, Segment] = {}
        self._count = 0

    @property
    def current(self) -> Segment:
        """The segment being appended to (opened on first use)."""
        if not self.segments:
            self._open_segment()
        return self.segments[-1]

    def pending_bytes(self) -> int:
        """Bytes written and not yet shipped."""
        return sum(segment.size - segment.shipped for segment in self.segments)

    def is_full(self) -> bool:
        """Whether more than `max_bytes` wait to be shipped."""
        return bool(self.max_bytes) and self.pending_bytes() > self.max_bytes

    def reserve(self, entry_id: str, line: bytes) -> None:
        """Journal a reservation; refused (503) while too much waits to be shipped."""
        if self.is_full():
            raise JournalFull(
                "The gateway cannot record usage right now (its usage journal is full while "
                "the database is unreachable). Retry later."
            )
        segment = self._append(line)
        segment.open_reservations += 1
        self._reserved_in[entry_id] = segment

    def settle(self, entry_id: str, line: bytes) -> None:
        """Journal a settled entry (and close its reservation, if it had one)."""
        self._append(line)
        segment = self._reserved_in.pop(entry_id, None)
        if segment is not None:
            segment.open_reservations -= 1

    def _append(self, line: bytes) -> Segment:
        try:
            segment = self.current
            if segment.size >= self.segment_bytes:
                segment = self._open_segment()
            written = os.write(segment.fd, line)
            while written < len(line):  # a regular file takes it whole; a full disk may not
                written += os.write(segment.fd, line[written:])
            if self.fsync:
                os.fsync(segment.fd)
        except OSError as exc:
            log.error("usage_journal_unwritable", directory=str(self.directory), reason=str(exc))
            self._cut_back()
            raise JournalUnwritable(
                "The gateway cannot record usage right now (its usage journal cannot be "
                "written). Retry later."
            ) from None
        if segment.first_unshipped_at is None:
            segment.first_unshipped_at = time.monotonic()
        segment.size += len(line)
        return segment

    def _cut_back(self) -> None:
        """After a failed append, the current segment cut back to its last whole entry (this
        process is its only writer), so no fragment glues itself to the next line."""
        if self.segments:
            segment = self.segments[-1]
            with contextlib.suppress(OSError):
                os.ftruncate(segment.fd, segment.size)

    def _open_segment(self) -> Segment:
        """A new segment file, locked for this process's life."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._count += 1
        path = self.directory / f"{self.owner}.{self._count:06d}{SUFFIX}"
        # Created under a name the shipper does not read, locked, then named: no other process
        # can take a new segment for a dead one's.
        hidden = path.with_name(path.name + NEW_SUFFIX)
        fd = os.open(hidden, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        if not lock(fd):  # a new file nobody else knows: cannot happen, but never write unlocked
            os.close(fd)
            raise OSError(f"journal segment {path} is locked by another process")
        os.rename(hidden, path)
        segment = Segment(path, fd)
        # A journal dropped without close() (an app never started or stopped) frees its file.
        segment.closer = weakref.finalize(segment, os.close, fd)
        self.segments.append(segment)
        return segment

    def retire(self, segment: Segment) -> None:
        """Delete a segment that is shipped, no longer appended to and has no open
        reservations."""
        self.segments.remove(segment)
        segment.path.unlink(missing_ok=True)
        segment.release()

    def close(self) -> None:
        """Release every segment; a shipped one without open reservations is deleted, any
        other is left for the next start to ship (its reservations become `interrupted`)."""
        for segment in list(self.segments):
            if segment.is_shipped and segment.open_reservations == 0:
                self.retire(segment)
            else:
                log.warning(
                    "usage_journal_left",
                    segment=segment.path.name,
                    unshipped_bytes=segment.size - segment.shipped,
                    open_reservations=segment.open_reservations,
                )
                self.segments.remove(segment)
                segment.release()
