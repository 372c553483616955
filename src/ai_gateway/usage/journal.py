"""Journal: the ledger's local, append-only write-ahead file, written on the request path.

Each process appends to its own segment files in one directory (`<owner>.<n>.jsonl`, the owner
being the process id and start time), holding an exclusive `flock` on each for as long as it
lives. A segment's blocks are allocated when it is opened (`posix_fallocate`, or zeros written
where the file system has none), so that on a file system that allocates blocks once (ext4,
XFS) a full disk is found then, as a refusal, and not as a SIGBUS in a later copy (a
copy-on-write file system such as btrfs or ZFS allocates again on every rewrite: keep the
journal off those). The segment being appended to is mapped into memory: an entry is a copy
into the file's own pages in the kernel's page cache, with no system call (the first store into
a page faults it in). Once the copy is done the entry survives the process being killed
(`kill -9`: the kernel keeps the pages and writes them to disk); with `fsync` on, the entry's
pages are also flushed (`msync`) so that it survives a power loss, at the cost of a disk flush
per entry. The newline is copied last, and readers stop at the last newline: zeros past the
last entry (a segment is cut to its entries once a newer one is opened, or when it is closed)
and an entry cut short by a crash mid-copy are never read as entries.

A segment whose lock can be taken belongs to a process that has died: the shipper
(usage/shipper.py) ships it whole, turning reservations without a settled entry into
`interrupted` entries, then deletes it.

The journal is bounded: past `max_bytes` not yet shipped (the database is unreachable), new
requests are refused with a 503 rather than served without a record.
"""

import errno
import fcntl
import mmap
import os
import time
import weakref
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
    """One of this process's segment files, mapped into memory while it is appended to."""

    path: Path
    fd: int
    view: mmap.mmap
    capacity: int
    """Bytes allocated (and mapped)."""
    size: int = 0
    """Bytes written."""
    shipped: int = 0
    """Bytes the shipper has read and stored."""
    open_reservations: int = 0
    """Reservations written here whose settled entry has not been written yet."""
    first_unshipped_at: float | None = field(default=None)
    closer: weakref.finalize | None = None  # type: ignore[type-arg]  # generic in the stubs only

    def seal(self) -> None:
        """No more entries: unmap it and cut the file to its entries (the file stays open,
        and locked, until released)."""
        if self.view.closed:
            return
        self.view.close()
        try:
            os.ftruncate(self.fd, self.size)
        except OSError as exc:  # the zeros stay: readers stop at the last newline anyway
            log.warning("usage_journal_not_cut", segment=self.path.name, reason=str(exc))

    def release(self) -> None:
        """Seal it and close the file (and with it the lock)."""
        if self.closer is not None and self.closer.alive:
            try:
                self.seal()
            finally:
                self.closer()

    @property
    def is_shipped(self) -> bool:
        """Every byte written has been stored."""
        return self.shipped >= self.size


def close_segment(view: mmap.mmap, fd: int) -> None:
    """Unmap a segment (if it still is) and close its file."""
    view.close()  # a second close does nothing
    os.close(fd)


ZEROS_PER_WRITE = 1024 * 1024
NEWLINE = ord("\n")


def allocate(fd: int, size: int) -> None:
    """Give the file `size` bytes of real blocks: a copy into a mapped page whose block could
    not be allocated would kill the process (SIGBUS) instead of failing. A file system without
    `fallocate` (some network and older ones) gets the zeros written."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
            raise
        zeros = bytes(min(size, ZEROS_PER_WRITE))
        for offset in range(0, size, len(zeros)):
            chunk = zeros[: size - offset]
            if os.pwrite(fd, chunk, offset) < len(chunk):  # a full disk: never leave a hole
                raise OSError(errno.ENOSPC, "No space left on device") from None


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
        length = len(line)
        segment = self.segments[-1] if self.segments else None
        try:
            if segment is None or segment.size + length > segment.capacity:
                segment = self._open_segment(length)
            start, end = segment.size, segment.size + length
            # The newline last: a crash mid-copy leaves a line without one, never read.
            segment.view[start : end - 1] = line[:-1]
            segment.view[end - 1] = NEWLINE
            if self.fsync:
                self._flush(segment, start, end)
        except OSError as exc:
            log.error("usage_journal_unwritable", directory=str(self.directory), reason=str(exc))
            raise JournalUnwritable(
                "The gateway cannot record usage right now (its usage journal cannot be "
                "written). Retry later."
            ) from None
        if segment.first_unshipped_at is None:
            segment.first_unshipped_at = time.monotonic()
        segment.size += length
        return segment

    @staticmethod
    def _flush(segment: Segment, start: int, end: int) -> None:
        """The entry's pages to disk (from the page holding its first byte); an entry that
        cannot be flushed is wiped, so a refused request never shows up after a crash."""
        page = start - start % mmap.PAGESIZE
        try:
            segment.view.flush(page, end - page)
        except OSError:
            segment.view[start:end] = bytes(end - start)
            raise

    def _open_segment(self, at_least: int) -> Segment:
        """A new segment file of `segment_bytes` (or `at_least`, if more), its blocks
        allocated and mapped, locked for this process's life."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._count += 1
        path = self.directory / f"{self.owner}.{self._count:06d}{SUFFIX}"
        # Created under a name the shipper does not read, locked, then named: no other process
        # can take a new segment for a dead one's.
        hidden = path.with_name(path.name + NEW_SUFFIX)
        capacity = max(self.segment_bytes, at_least)
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        view = None
        try:
            if not lock(fd):  # a new file nobody knows: cannot happen, but never write unlocked
                raise OSError(f"journal segment {path} is locked by another process")
            allocate(fd, capacity)  # a full disk fails here, not in a later copy
            view = mmap.mmap(fd, capacity)
            os.rename(hidden, path)
        except OSError:
            if view is not None:
                view.close()
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        if self.segments:  # the previous one takes no more entries: unmapped, cut to size
            self.segments[-1].seal()
        segment = Segment(path, fd, view, capacity)
        # A journal dropped without close() (an app never started or stopped) frees its file.
        segment.closer = weakref.finalize(segment, close_segment, view, fd)
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
