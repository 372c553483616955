"""Runtime: what the gateway opens at start-up and closes at shutdown, beside the requests:
the database (its schema checked, SQLite's brought up to date), the key directory's background
refresh and its Redis subscription, the limiter's pending settles, the usage shipper, the
metrics a worker shares with the others, Redis and the providers."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.db.engine import failure_reason
from ai_gateway.db.migrations import ensure_schema
from ai_gateway.keys.directory import KeyDirectory
from ai_gateway.keys.invalidation import publish
from ai_gateway.keys.records import Change
from ai_gateway.limits.admission import Admission
from ai_gateway.observability.shared import SharedMetrics
from ai_gateway.usage.shipper import Shipper

if TYPE_CHECKING:
    import redis.asyncio

log = structlog.get_logger(__name__)

RECOVERY_S = 10.0
"""The longest start-up waits to ship a dead process's journal before serving."""


class Runtime:
    """Start-up and shutdown of the gateway's connections and background tasks."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        directory: KeyDirectory,
        admission: Admission,
        shipper: Shipper | None,
        redis_client: "redis.asyncio.Redis | None",
        redis_prefix: str,
        refresh_s: float,
        close_providers: Callable[[], Awaitable[None]] | None,
        shared_metrics: SharedMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.directory = directory
        self.admission = admission
        self.shipper = shipper
        self.redis = redis_client
        self.redis_prefix = redis_prefix
        self.refresh_s = refresh_s
        self.close_providers = close_providers
        self.shared_metrics = shared_metrics
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Open the database, load the keys, start keeping them fresh."""
        await ensure_schema(self.engine)
        await self.directory.reload()
        self._tasks.append(asyncio.create_task(self.directory.keep_fresh(self.refresh_s)))
        if self.shipper is not None:
            await self.recover_journals()
            self._tasks.append(asyncio.create_task(self.shipper.run()))
        if self.shared_metrics is not None:
            self._tasks.append(asyncio.create_task(self.shared_metrics.run()))
        if self.redis is not None:
            from ai_gateway.keys.subscription import subscribe  # redis-py only when it is used

            changes = subscribe(self.redis, self.redis_prefix, on_reconnect=self.directory.reload)
            self._tasks.append(asyncio.create_task(self.directory.follow(changes)))

    async def announce(self, change: Change) -> None:
        """A committed change to a key or team: applied here at once, and announced to the other
        replicas through Redis (if either fails, the next refresh catches up)."""
        try:
            await self.directory.apply(change)
        except Exception:
            log.warning("key_change_not_applied", scope=change.scope.value, id=change.id)
        if self.redis is not None:
            try:
                await publish(self.redis, self.redis_prefix, change)
            except Exception:
                log.warning("key_change_not_announced", scope=change.scope.value, id=change.id)

    async def recover_journals(self) -> None:
        """Ship what dead processes left in the journal before serving, so that budgets seeded
        from the ledger count it (best effort, bounded: the shipper goes on with the rest)."""
        if self.shipper is None:
            return
        try:
            async with asyncio.timeout(RECOVERY_S):
                await self.shipper.ship_orphans()
        except Exception as exc:
            log.warning("usage_recovery_incomplete", reason=failure_reason(exc))

    async def ship_last(self) -> None:
        """Ship what the journal still holds and release it (what cannot be shipped now is
        shipped at the next start)."""
        if self.shipper is None:
            return
        try:
            await self.shipper.ship_own()
        except Exception as exc:
            log.warning("usage_not_shipped", reason=failure_reason(exc))
        self.shipper.journal.close()
        await self.shipper.writer.close()

    async def stop(self) -> None:
        """Stop the background tasks, write pending figures, close every connection."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # A task that died is not a reason to skip the rest of the shutdown.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        try:
            await self.directory.flush_last_used()
        except Exception:
            log.warning("last_used_not_written", exc_info=True)
        await self.admission.aclose()
        await self.ship_last()
        if self.shared_metrics is not None:
            self.shared_metrics.publish()  # this worker's last figures
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
        if self.close_providers is not None:
            await self.close_providers()
