"""RedisLimiter: the limits counted in Redis and shared by every replica: one round trip per
admission, which also carries the settles queued since the last one; settles that find no
admission to ride with are sent on their own within SHARE_WINDOW_S."""

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ai_gateway.errors import ServiceUnavailable
from ai_gateway.keys.caller import Subject
from ai_gateway.limits.headers import retry_after_headers
from ai_gateway.limits.limiter import LEASE_TTL_MS, WINDOW_MS, Denial, Grant
from ai_gateway.limits.outage import Outage
from ai_gateway.limits.script_runner import Busy, Call, ScriptRunner, Unsent
from ai_gateway.limits.verdict import Count, Standing, decide, new_lease

log = structlog.get_logger(__name__)

STORE_ERRORS = (RedisError, OSError)
OUTAGE_BACKOFF_S = 1.0
SHARE_WINDOW_S = 0.002
"""How long a queued settle waits for an admission to carry it before it is sent alone: a
parallel lease may end up to this much later than its request (a limit only the stricter)."""
MAX_SETTLED_TOKENS = 2**31 - 1
"""An upstream's usage is any integer; Redis counts in 64-bit integers and Lua in doubles, so a
settle is clamped to the largest limit a key can have."""
SETTLE_BATCH = 256
"""Settles per script call: bounds one call's arguments and the time Redis spends on it."""
MAX_PENDING_SETTLES = 100_000
"""While Redis is down settles wait here; past this many they are dropped (leases then end by
their TTL, token charges stay at the estimate)."""
COUNTS_PER_SUBJECT = 7
UNAVAILABLE = "Rate limits cannot be checked right now; please retry shortly."


def redis_client(url: str, *, timeout_s: float, max_connections: int = 64) -> "redis.asyncio.Redis":
    """The gateway's Redis client: each command answers within `timeout_s` or fails, and none
    is retried (a retried admission could count twice, and retries would outlast the timeout).

    Its pool serves change announcements and the subscription: concurrent commands wait for
    one of `max_connections` connections (within the same timeout) instead of failing as
    redis-py's default pool does past its size. The limiter's and the budgets' scripts run on
    connections of their own made from this pool's settings, up to 64 each (ScriptRunner).
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
        self._scripts = ScriptRunner(
            client, {"admit": script_text("admit.lua"), "settle": script_text("settle.lua")}
        )
        self._kick_handle: asyncio.TimerHandle | None = None
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
        batch = self._take_batch()
        calls: list[Call] = [self._settle_call(batch)] if batch else []
        try:
            replies = await self._scripts.run([*calls, ("admit", keys, args)])
            self._settled(batch, replies[0] if batch else None)
            counts = replies[-1]
            if isinstance(counts, Exception):
                raise counts
        except Busy:  # nothing was sent, and Redis is not known to be down
            self._requeue(batch)
            return self._unchecked(lease)
        except Unsent as error:
            self._outage.failed(error)
            self._requeue(batch)
            return self._unchecked(lease)
        except STORE_ERRORS as error:
            self._outage.failed(error)
            self._requeue(batch)
            self._release(limited, lease)
            return self._unchecked(lease)
        except asyncio.CancelledError:
            self._requeue(batch)
            self._release(limited, lease)
            raise
        self._outage.succeeded()
        return decide(
            standings(limited, counts), tokens=cost, lease=lease, window_ms=self._window_ms
        )

    def settle(self, subjects: tuple[Subject, ...], grant: Grant, *, tokens: int) -> None:
        """Queue the settle: it rides with the next admission's call, or goes on its own after
        SHARE_WINDOW_S (a background task sends what is queued, one call per batch)."""
        limited = tuple(subject for subject in subjects if subject.limits.is_limited)
        if self._is_closed or not grant.is_counted or not limited:
            return
        self._queue(limited, grant.lease, tokens)

    def _release(self, limited: tuple[Subject, ...], lease: str) -> None:
        """After a call whose answer never came (a timeout, a reset, the caller left), Redis may
        still have recorded the admission: its lease is settled to nothing, to be sure (settling
        an unknown lease changes nothing)."""
        if not self._is_closed:
            self._queue(limited, lease, 0)

    def _queue(self, limited: tuple[Subject, ...], lease: str, tokens: int) -> None:
        """Queue a settle to ride with the next admission (or be sent within the window)."""
        keys = tuple(key for subject in limited for key in subject_keys(self._prefix, subject)[1:])
        if len(self._pending) >= MAX_PENDING_SETTLES:
            return
        used = min(max(0, tokens), MAX_SETTLED_TOKENS)
        self._pending.append(PendingSettle(lease, used, keys))
        self._idle.clear()
        if self._kick_handle is None:
            loop = asyncio.get_running_loop()
            self._kick_handle = loop.call_later(SHARE_WINDOW_S, self._kick)

    def _kick(self) -> None:
        """Settles no admission carried within the share window: the sender sends them."""
        self._kick_handle = None
        if not self._pending:
            return
        self._wake.set()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_forever())

    def _take_batch(self) -> list[PendingSettle]:
        """The oldest queued settles, taken off the queue to ride with a call."""
        count = min(len(self._pending), SETTLE_BATCH)
        return [self._pending.popleft() for _ in range(count)]

    def _requeue(self, batch: list[PendingSettle]) -> None:
        """Settles whose call failed go back to the front, to be sent after the backoff."""
        if batch:
            self._pending.extendleft(reversed(batch))
            self._idle.clear()
            self._kick()

    def _settled(self, batch: list[PendingSettle], reply: Any) -> None:
        """After a call that carried settles. Redis answered, so an error reply is about the
        batch itself and would recur: it is logged and dropped (its leases end by their TTL),
        never retried ahead of every later settle."""
        if isinstance(reply, Exception):
            log.warning("limits_settles_dropped", count=len(batch), error=type(reply).__name__)
        if batch and not self._pending:
            self._idle.set()

    def _settle_call(self, batch: list[PendingSettle]) -> Call:
        """One settle script call for a batch."""
        keys = [key for pending in batch for key in pending.keys]
        args: list[Any] = [self._window_ms]
        for pending in batch:
            args += [pending.lease, pending.tokens, len(pending.keys) // 3]
        return ("settle", keys, args)

    async def flush(self) -> None:
        """Wait until no settle is queued: each has been sent, alone or with an admission that
        may still be on its way (this waits out an outage)."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Send the settles still queued (one try each) and close the limiter's connections;
        the client is left open."""
        self._is_closed = True
        if self._kick_handle is not None:
            self._kick_handle.cancel()
            self._kick_handle = None
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        while self._pending and await self._send_batch():
            pass
        self._pending.clear()
        self._idle.set()
        await self._scripts.aclose()

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
        """Send the oldest queued settles on their own; a batch that fails goes back to the
        queue, and sending one twice (after a cancel) is harmless."""
        batch = self._take_batch()
        try:
            (reply,) = await self._scripts.run([self._settle_call(batch)])
            self._settled(batch, reply)
        except Busy:
            self._pending.extendleft(reversed(batch))
            return False
        except STORE_ERRORS as error:
            self._outage.failed(error)
            self._pending.extendleft(reversed(batch))
            return False
        except BaseException:
            self._pending.extendleft(reversed(batch))
            raise
        self._outage.succeeded()
        return True
