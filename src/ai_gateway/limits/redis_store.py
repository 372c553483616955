"""RedisLimiter: the limits counted in Redis and shared by every replica, one Lua script call per
admission, settles batched off the response path."""

import asyncio
import contextlib
import itertools
from collections import deque
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ai_gateway.errors import ServiceUnavailable
from ai_gateway.keys.caller import Subject
from ai_gateway.limits.headers import retry_after_headers
from ai_gateway.limits.limiter import LEASE_TTL_MS, WINDOW_MS, Denial, Grant
from ai_gateway.limits.outage import Outage
from ai_gateway.limits.verdict import Count, Standing, decide, new_lease

STORE_ERRORS = (RedisError, OSError)
OUTAGE_BACKOFF_S = 1.0
SETTLE_BATCH = 256
"""Settles per script call: bounds one call's arguments and the time Redis spends on it."""
MAX_PENDING_SETTLES = 100_000
"""While Redis is down settles wait here; past this many they are dropped (leases then end by
their TTL, token charges stay at the estimate)."""
COUNTS_PER_SUBJECT = 7
UNAVAILABLE = "Rate limits cannot be checked right now; please retry shortly."


def redis_client(url: str, *, timeout_s: float, max_connections: int = 64) -> "redis.asyncio.Redis":
    """A client for the limiter: each command answers within `timeout_s` or fails, and none is
    retried (a retried admission could count twice, and retries would outlast the timeout).

    Concurrent commands wait for one of `max_connections` connections (within the same
    timeout) instead of failing as redis-py's default pool does past its size.
    """
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return redis.asyncio.Redis.from_pool(pool)


def script_text(name: str) -> str:
    """One of the package's Lua scripts."""
    return resources.files("ai_gateway.limits").joinpath(name).read_text(encoding="utf-8")


def subject_keys(prefix: str, subject: Subject) -> tuple[str, str, str, str]:
    """A subject's keys: admissions, token charges, token weights, parallel leases."""
    base = f"{prefix}:{subject.scope}:{subject.id}"
    return f"{base}:req", f"{base}:tok", f"{base}:wts", f"{base}:par"


def limit_arg(limit: int | None) -> int:
    """A limit as the script takes it: -1 = not limited."""
    return -1 if limit is None else limit


def standings(subjects: tuple[Subject, ...], counts: list[int]) -> tuple[Standing, ...]:
    """The script's seven counts per subject as Standings."""
    result = []
    for index, subject in enumerate(subjects):
        r_used, r_reset, r_wait, t_used, t_reset, t_wait, p_used = counts[
            index * COUNTS_PER_SUBJECT : (index + 1) * COUNTS_PER_SUBJECT
        ]
        requests, tokens = Count(r_used, r_reset, r_wait), Count(t_used, t_reset, t_wait)
        result.append(Standing(subject, requests, tokens, Count(used=p_used)))
    return tuple(result)


@dataclass(frozen=True, slots=True)
class PendingSettle:
    """A settle waiting to be sent: the lease, the tokens used, each subject's three keys."""

    lease: str
    tokens: int
    keys: tuple[str, ...]


class RedisLimiter:
    """Counts in Redis with Redis's clock, so every replica shares exact limits.

    `client` stays the caller's to close (see `redis_client`: its timeout bounds every call,
    and it must not retry). While Redis cannot be reached, requests pass uncounted
    (`fail_open`) or are refused with a 503, and Redis is only tried again after a short backoff.
    """

    def __init__(
        self,
        client: "redis.asyncio.Redis",
        *,
        prefix: str,
        fail_open: bool,
        window_ms: int = WINDOW_MS,
        lease_ttl_ms: int = LEASE_TTL_MS,
        outage_backoff_s: float = OUTAGE_BACKOFF_S,
    ) -> None:
        self._prefix = prefix
        self._fail_open = fail_open
        self._window_ms = window_ms
        self._lease_ttl_ms = lease_ttl_ms
        self._admit_script = client.register_script(script_text("admit.lua"))
        self._settle_script = client.register_script(script_text("settle.lua"))
        self._outage = Outage(backoff_s=outage_backoff_s)
        self._pending: deque[PendingSettle] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._is_closed = False

    async def admit(self, subjects: tuple[Subject, ...], *, tokens: int) -> Grant | Denial:
        """Check and, if every limit allows it, record the request: one script call."""
        limited = tuple(subject for subject in subjects if subject.limits.is_limited)
        cost, lease = max(0, tokens), new_lease()
        if not limited:
            return Grant(lease, cost, None, None)
        if self._outage.should_skip():
            return self._unchecked(lease)
        keys = [key for subject in limited for key in subject_keys(self._prefix, subject)]
        args: list[Any] = [self._window_ms, self._lease_ttl_ms, cost, lease]
        for subject in limited:
            limits = subject.limits
            args += [limit_arg(limits.rpm), limit_arg(limits.tpm), limit_arg(limits.parallel)]
        try:
            counts = await self._admit_script(keys=keys, args=args)
        except STORE_ERRORS as error:
            self._outage.failed(error)
            return self._unchecked(lease)
        self._outage.succeeded()
        return decide(
            standings(limited, counts), tokens=cost, lease=lease, window_ms=self._window_ms
        )

    def settle(self, subjects: tuple[Subject, ...], grant: Grant, *, tokens: int) -> None:
        """Queue the settle; a background task sends what is queued, one call per batch."""
        limited = tuple(subject for subject in subjects if subject.limits.is_limited)
        if self._is_closed or not grant.is_counted or not limited:
            return
        if len(self._pending) >= MAX_PENDING_SETTLES:
            return
        keys = tuple(key for subject in limited for key in subject_keys(self._prefix, subject)[1:])
        self._pending.append(PendingSettle(grant.lease, max(0, tokens), keys))
        self._idle.clear()
        self._wake.set()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_forever())

    async def flush(self) -> None:
        """Wait until every settle queued so far is in Redis (this waits out an outage)."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Send the settles still queued (one try each); the client is left open."""
        self._is_closed = True
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        while self._pending and await self._send_batch():
            pass
        self._pending.clear()
        self._idle.set()

    def _unchecked(self, lease: str) -> Grant:
        """The answer while Redis cannot be reached."""
        if self._fail_open:
            return Grant(lease, 0, None, None, is_counted=False)
        raise ServiceUnavailable(
            UNAVAILABLE,
            code="limits_unavailable",
            headers=retry_after_headers(round(self._outage.wait_s() * 1000)),
        )

    async def _send_forever(self) -> None:
        """Send queued settles as soon as there are any: a batch per round trip."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                # A failed batch stays queued; it is tried again after the outage backoff.
                await asyncio.sleep(self._outage.wait_s())
                await self._send_batch()
            self._idle.set()

    async def _send_batch(self) -> bool:
        """Send the oldest queued settles; they leave the queue only once Redis has them, and
        sending one twice (after a cancel) is harmless."""
        batch = list(itertools.islice(self._pending, SETTLE_BATCH))
        keys = [key for pending in batch for key in pending.keys]
        args: list[Any] = [self._window_ms]
        for pending in batch:
            args += [pending.lease, pending.tokens, len(pending.keys) // 3]
        try:
            await self._settle_script(keys=keys, args=args)
        except STORE_ERRORS as error:
            self._outage.failed(error)
            return False
        self._outage.succeeded()
        for _ in batch:
            self._pending.popleft()
        return True
