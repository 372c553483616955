"""Shipper: moves journal entries into the ledger table, in batches, off the request path
(the reading and storing in a process of its own: usage/writer.py).

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
from pathlib import Path

import structlog

from ai_gateway.db.engine import failure_reason
from ai_gateway.usage.journal import NEW_SUFFIX, SUFFIX, Journal, Segment, lock, owner_of
from ai_gateway.usage.writer import LedgerWriter

log = structlog.get_logger(__name__)

MAX_BACKOFF_S = 30.0


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

    def __init__(self, journal: Journal, writer: LedgerWriter, *, interval_s: float) -> None:
        self.journal = journal
        self.writer = writer
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
        """What the segment held when called (its settled entries). Entries written meanwhile
        wait for the next round: chasing them under load would ship a few rows per
        transaction, back to back."""
        shipped = 0
        if not segment.is_shipped:  # no call to the writer for nothing, every round
            offset, shipped = await self.writer.settled(segment.path, segment.shipped, segment.size)
            segment.shipped = max(segment.shipped, offset)
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
            entries = await self.writer.recovered(paths)
            for path in paths:
                path.unlink(missing_ok=True)
            log.info("usage_journal_recovered", segments=len(paths), entries=entries)
            return entries
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
