"""KeyDirectory: bearer token -> Caller from memory. Stored keys are loaded at start-up,
reloaded in the background every KEY_CACHE_REFRESH_S, and one by one when a change is announced
(on this replica by the admin API, on the others through Redis); the hot path never waits on
the database for a known key. An unknown token is looked up once and remembered as unknown for
KEY_NEGATIVE_TTL_S, with look-ups bounded so a flood of bad keys cannot hammer the database."""

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

from ai_gateway.errors import AuthenticationFailed
from ai_gateway.keys.caller import Caller, Scope, Subject
from ai_gateway.keys.records import Change, Membership
from ai_gateway.keys.secret import digest

log = structlog.get_logger(__name__)

MAX_NEGATIVE_ENTRIES = 10_000
MAX_CONCURRENT_LOOKUPS = 4
MAX_WAITING_LOOKUPS = 64


class KeySource(Protocol):
    """Where stored keys come from (the database)."""

    async def memberships(self) -> list[Membership]:
        """Every stored key with its team."""
        ...

    async def find(self, digest: bytes) -> Membership | None:
        """The key whose current (or still-graced previous) secret has this digest."""
        ...

    async def memberships_of(self, change: Change) -> list[Membership]:
        """The keys a change concerns, as they are now (none if deleted)."""
        ...

    async def touch(self, last_used: Mapping[str, datetime]) -> None:
        """Record when keys were last used."""
        ...


def refused(message: str) -> AuthenticationFailed:
    """The 401 every refused key gets."""
    return AuthenticationFailed(message)


INCORRECT = "Incorrect API key provided."


EXPIRED = "This API key has expired."


@dataclass(frozen=True, slots=True)
class Entry:
    """A cached key: its caller, until when it is valid (and what it is then), why it is
    refused if it is, and whether it is stored (its last use is written back)."""

    caller: Caller
    not_after: float | None = None
    refusal: str | None = None
    after_message: str = EXPIRED
    is_stored: bool = True

    def admit(self, now: float) -> Caller:
        """The caller, or the 401 for a disabled or expired key."""
        if self.refusal is not None:
            raise refused(self.refusal)
        if self.not_after is not None and now >= self.not_after:
            raise refused(self.after_message)
        return self.caller


def static_caller(key_digest: bytes) -> Caller:
    """A key from GATEWAY_API_KEYS: no team, no limits, every model."""
    return Caller(key_id=f"static-{key_digest[:4].hex()}")


def timestamp(moment: datetime | None) -> float | None:
    """Unix seconds of an aware or naive-UTC datetime."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def caller_of(membership: Membership) -> Caller:
    """The Caller a stored key stands for: its limits and budget, and its team's."""
    key, team = membership.key, membership.team
    subjects = []
    if key.limits.is_limited or key.budget is not None:
        subjects.append(Subject(Scope.KEY, key.id, key.limits, key.budget))
    if team is not None and (team.limits.is_limited or team.budget is not None):
        subjects.append(Subject(Scope.TEAM, team.id, team.limits, team.budget))
    models = None if key.models is None else frozenset(key.models)
    return Caller(key_id=key.id, team=key.team_id, models=models, subjects=tuple(subjects))


def refusal_of(membership: Membership) -> str | None:
    """Why a stored key is refused right now regardless of time, if it is."""
    if membership.key.is_disabled:
        return "This API key has been disabled."
    if membership.team is not None and membership.team.is_disabled:
        return "This API key's team has been disabled."
    return None


def entries_of(membership: Membership) -> list[tuple[bytes, Entry]]:
    """The cache entries of a stored key: its secret, and the replaced one during its grace."""
    key = membership.key
    caller, refusal = caller_of(membership), refusal_of(membership)
    expires = timestamp(key.expires_at)
    entries = [(key.digest, Entry(caller, expires, refusal))]
    grace = timestamp(key.previous_expires_at)
    if key.previous_digest is not None and grace is not None:
        not_after = grace if expires is None else min(grace, expires)
        # Once its grace ends, a replaced secret is unknown, as on a replica that never saw it.
        entries.append((key.previous_digest, Entry(caller, not_after, refusal, INCORRECT)))
    return entries


class KeyDirectory:
    """Static and stored keys by digest, in memory; see the module docstring for freshness."""

    def __init__(
        self,
        static_keys: Iterable[str],
        source: KeySource | None,
        *,
        negative_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._static = {
            digest(key): Entry(static_caller(digest(key)), is_stored=False) for key in static_keys
        }
        self._source = source
        self._negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._entries: dict[bytes, Entry] = dict(self._static)
        self._digests_of: dict[str, list[bytes]] = {}
        self._unknown: OrderedDict[bytes, float] = OrderedDict()
        self._lookups = asyncio.Semaphore(MAX_CONCURRENT_LOOKUPS)
        self._pending: dict[bytes, asyncio.Future[Entry | None]] = {}
        self._used: dict[str, float] = {}
        self._is_loaded = False
        """Stored keys are consulted only once the database has been opened (start-up)."""
        self._reloading = asyncio.Lock()
        self._changed: set[str] | None = None
        """Keys applied while a reload reads its snapshot (None when no reload runs)."""

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"KeyDirectory({len(self)} keys)"

    async def caller(self, token: str) -> Caller:
        """The caller a bearer token stands for, or a 401."""
        token_digest = digest(token)
        entry = self._entries.get(token_digest)
        if entry is None:
            entry = await self._look_up(token_digest)
        now = self._clock()
        caller = entry.admit(now)
        if entry.is_stored:
            self._used[caller.key_id] = now
        return caller

    async def _look_up(self, token_digest: bytes) -> Entry:
        """A token not in memory: known-unknown, or asked of the database once (concurrent
        requests with the same token share that one look-up)."""
        pending = self._pending.get(token_digest)
        if pending is None:
            source = self._source
            if (
                source is None
                or not self._is_loaded
                or self._is_known_unknown(token_digest)
                or len(self._pending) >= MAX_WAITING_LOOKUPS
            ):
                raise refused(INCORRECT)
            pending = asyncio.ensure_future(self._fetch(source, token_digest))
            self._pending[token_digest] = pending
            pending.add_done_callback(lambda _: self._pending.pop(token_digest, None))
        entry = await asyncio.shield(pending)
        if entry is None:
            raise refused(INCORRECT)
        return entry

    async def _fetch(self, source: KeySource, token_digest: bytes) -> Entry | None:
        """One database look-up (at most MAX_CONCURRENT_LOOKUPS at a time), its answer cached:
        the key's entry, or the digest remembered as unknown."""
        async with self._lookups:
            membership = await self._find(source, token_digest)
        if membership is not None:
            self._store([membership])
        entry = self._entries.get(token_digest)
        if entry is None:  # unknown, or a replaced secret whose grace has ended
            self._remember_unknown(token_digest)
        return entry

    def _is_known_unknown(self, token_digest: bytes) -> bool:
        """Whether a digest was looked up and not found a short while ago."""
        until = self._unknown.get(token_digest)
        return until is not None and self._clock() < until

    async def _find(self, source: KeySource, token_digest: bytes) -> Membership | None:
        """The stored key for a digest; a database failure is a refusal, logged, never a 500."""
        try:
            return await source.find(token_digest)
        except Exception:
            log.warning("key_lookup_failed", exc_info=True)
            return None

    def _remember_unknown(self, token_digest: bytes) -> None:
        """Negative-cache a digest (bounded: the oldest are forgotten first)."""
        self._unknown[token_digest] = self._clock() + self._negative_ttl_s
        self._unknown.move_to_end(token_digest)
        while len(self._unknown) > MAX_NEGATIVE_ENTRIES:
            self._unknown.popitem(last=False)

    def _store(self, memberships: Iterable[Membership]) -> None:
        """Add or replace stored keys in the cache."""
        for membership in memberships:
            self._drop(membership.key.id)
            if self._changed is not None:
                self._changed.add(membership.key.id)
            pairs = entries_of(membership)
            self._digests_of[membership.key.id] = [d for d, _ in pairs]
            for key_digest, entry in pairs:
                self._entries[key_digest] = entry
                self._unknown.pop(key_digest, None)

    def _drop(self, key_id: str) -> None:
        """Forget a stored key's entries."""
        if self._changed is not None:
            self._changed.add(key_id)
        for key_digest in self._digests_of.pop(key_id, ()):
            if key_digest not in self._static:
                self._entries.pop(key_digest, None)

    async def reload(self) -> None:
        """Replace the whole cache with the database's keys (start-up and the refresh loop).
        A key changed while the snapshot was being read keeps its newer state: a reload never
        brings back a key that was just disabled, deleted or rotated."""
        if self._source is None:
            return
        async with self._reloading:
            self._changed = set()
            try:
                memberships = await self._source.memberships()
            finally:
                changed, self._changed = self._changed, None
            fresh = KeyDirectory((), None, negative_ttl_s=self._negative_ttl_s, clock=self._clock)
            fresh._store(memberships)
            for key_id in changed:
                fresh._drop(key_id)
                digests = self._digests_of.get(key_id, [])
                fresh._digests_of[key_id] = digests
                fresh._entries.update((d, self._entries[d]) for d in digests if d in self._entries)
            self._entries = {**fresh._entries, **self._static}
            self._digests_of = {k: v for k, v in fresh._digests_of.items() if v}
            self._is_loaded = True

    async def apply(self, change: Change) -> None:
        """Bring the keys a change concerns up to date (a deleted key disappears)."""
        if self._source is None:
            return
        memberships = await self._source.memberships_of(change)
        if change.scope is Scope.KEY:
            self._drop(change.id)
        else:
            for key_id in [m.key.id for m in memberships]:
                self._drop(key_id)
        self._store(memberships)

    async def flush_last_used(self) -> None:
        """Write the keys' last-used times (batched, off the request path)."""
        if self._source is None or not self._used:
            return
        used, self._used = self._used, {}
        await self._source.touch(
            {key_id: datetime.fromtimestamp(at, UTC) for key_id, at in used.items()}
        )

    async def keep_fresh(self, interval_s: float) -> None:
        """Reload every `interval_s` and write last-used times, until cancelled; a failing
        database is logged once per outage and the cache kept as it was."""
        is_failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reload()
                await self.flush_last_used()
            except Exception:
                if not is_failing:
                    log.warning("key_refresh_failed", exc_info=True)
                is_failing = True
            else:
                if is_failing:
                    log.info("key_refresh_recovered")
                is_failing = False

    async def follow(self, changes: AsyncIterator[Change]) -> None:
        """Apply announced changes as they arrive, until cancelled; one that cannot be applied
        is logged and left to the next refresh."""
        async for change in changes:
            try:
                await self.apply(change)
            except Exception:
                log.warning("key_change_not_applied", scope=change.scope.value, id=change.id)
