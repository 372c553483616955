"""KeyDirectory: tokens resolve from memory; unknown tokens are looked up once, negative-cached
and bounded; changes and reloads apply; disabled, expired and graced secrets behave."""

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from ai_gateway.errors import AuthenticationFailed
from ai_gateway.keys.caller import Caller, Limits, Scope, Subject
from ai_gateway.keys.directory import MAX_WAITING_LOOKUPS, KeyDirectory
from ai_gateway.keys.records import Change, KeyRecord, Membership, TeamRecord
from ai_gateway.keys.secret import digest, new_secret

pytestmark = pytest.mark.anyio


class Clock:
    """Wall-clock seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class MemorySource:
    """The directory's KeySource contract over a dict (the SQL repository passes the same
    behaviour in tests/keys); counts how often the store is asked."""

    def __init__(self, memberships: list[Membership] | None = None) -> None:
        self.by_id = {m.key.id: m for m in memberships or []}
        self.finds = 0
        self.find_delay_s = 0.0
        self.touched: dict[str, datetime] = {}

    async def memberships(self) -> list[Membership]:
        snapshot = list(self.by_id.values())
        await asyncio.sleep(self.find_delay_s)  # the snapshot is read, then arrives late
        return snapshot

    async def find(self, key_digest: bytes) -> Membership | None:
        self.finds += 1
        await asyncio.sleep(self.find_delay_s)
        for membership in self.by_id.values():
            if key_digest in (membership.key.digest, membership.key.previous_digest):
                return membership
        return None

    async def memberships_of(self, change: Change) -> list[Membership]:
        if change.scope is Scope.KEY:
            found = self.by_id.get(change.id)
            return [found] if found else []
        return [m for m in self.by_id.values() if m.team and m.team.id == change.id]

    async def touch(self, last_used: Mapping[str, datetime]) -> None:
        self.touched.update(last_used)


def stored(secret: str, key_id: str = "key_1", **fields: object) -> Membership:
    """A stored key for `secret`, with `fields` on its record; `team` a TeamRecord."""
    team = fields.pop("team", None)
    record = KeyRecord(id=key_id, name=key_id, digest=digest(secret), prefix=secret[:12], **fields)  # type: ignore[arg-type]
    return Membership(record, team)  # type: ignore[arg-type]


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def loaded(source: MemorySource, clock: Clock, static: tuple[str, ...] = ()) -> KeyDirectory:
    directory = KeyDirectory(static, source, negative_ttl_s=5.0, clock=clock)
    await directory.reload()
    return directory


async def test_a_stored_key_resolves_to_its_caller_with_key_and_team_limits() -> None:
    secret = new_secret()
    team = TeamRecord(id="team_1", name="research", limits=Limits(rpm=100))
    source = MemorySource([stored(secret, team_id="team_1", limits=Limits(tpm=50), team=team)])
    directory = await loaded(source, Clock())

    caller = await directory.caller(secret)

    assert caller == Caller(
        key_id="key_1",
        team="team_1",
        subjects=(
            Subject(Scope.KEY, "key_1", Limits(tpm=50)),
            Subject(Scope.TEAM, "team_1", Limits(rpm=100)),
        ),
    )
    assert source.finds == 0


async def test_static_keys_have_no_limits_and_no_team() -> None:
    directory = await loaded(MemorySource(), Clock(), static=("sk-static",))

    caller = await directory.caller("sk-static")

    assert caller.team is None
    assert caller.subjects == ()
    assert caller.models is None
    assert caller.key_id.startswith("static-")


async def test_an_unknown_key_is_looked_up_once_then_negative_cached() -> None:
    clock, source = Clock(), MemorySource()
    directory = await loaded(source, clock)

    for _ in range(3):
        with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
            await directory.caller("sk-gw-nobody")
    assert source.finds == 1

    clock.now += 6  # past the negative TTL: asked again
    with pytest.raises(AuthenticationFailed):
        await directory.caller("sk-gw-nobody")
    assert source.finds == 2


async def test_concurrent_requests_with_one_unknown_key_cause_one_look_up() -> None:
    source = MemorySource()
    source.find_delay_s = 0.05
    directory = await loaded(source, Clock())

    results = await asyncio.gather(
        *(directory.caller("sk-gw-flood") for _ in range(20)), return_exceptions=True
    )

    assert all(isinstance(r, AuthenticationFailed) for r in results)
    assert source.finds == 1


async def test_a_flood_of_distinct_bad_keys_is_refused_beyond_the_waiting_bound() -> None:
    source = MemorySource()
    source.find_delay_s = 0.05
    directory = await loaded(source, Clock())

    results = await asyncio.gather(
        *(directory.caller(f"sk-gw-bad-{i}") for i in range(MAX_WAITING_LOOKUPS + 50)),
        return_exceptions=True,
    )

    assert all(isinstance(r, AuthenticationFailed) for r in results)
    assert source.finds == MAX_WAITING_LOOKUPS


async def test_a_key_created_elsewhere_is_found_on_first_use() -> None:
    source = MemorySource()
    directory = await loaded(source, Clock())
    secret = new_secret()
    source.by_id["key_new"] = stored(secret, "key_new")

    assert (await directory.caller(secret)).key_id == "key_new"
    assert (await directory.caller(secret)).key_id == "key_new"
    assert source.finds == 1


async def test_a_disabled_key_or_team_is_refused_with_a_reason() -> None:
    secret, other = new_secret(), new_secret()
    team = TeamRecord(id="team_1", name="t", is_disabled=True)
    source = MemorySource(
        [stored(secret, is_disabled=True), stored(other, "key_2", team_id="team_1", team=team)]
    )
    directory = await loaded(source, Clock())

    with pytest.raises(AuthenticationFailed, match="has been disabled"):
        await directory.caller(secret)
    with pytest.raises(AuthenticationFailed, match="team has been disabled"):
        await directory.caller(other)
    assert source.finds == 0


async def test_a_key_stops_working_when_it_expires() -> None:
    clock, secret = Clock(), new_secret()
    directory = await loaded(MemorySource([stored(secret, expires_at=at(clock.now + 10))]), clock)

    await directory.caller(secret)
    clock.now += 10
    with pytest.raises(AuthenticationFailed, match="expired"):
        await directory.caller(secret)


async def test_a_rotated_key_keeps_its_old_secret_for_the_grace_period() -> None:
    clock, old, new = Clock(), new_secret(), new_secret()
    membership = stored(new, previous_digest=digest(old), previous_expires_at=at(clock.now + 60))
    directory = await loaded(MemorySource([membership]), clock)

    assert (await directory.caller(old)).key_id == "key_1"
    assert (await directory.caller(new)).key_id == "key_1"
    clock.now += 60
    with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
        await directory.caller(old)
    assert (await directory.caller(new)).key_id == "key_1"


async def test_an_applied_change_replaces_or_removes_a_key_at_once() -> None:
    secret = new_secret()
    source = MemorySource([stored(secret)])
    directory = await loaded(source, Clock())
    await directory.caller(secret)

    source.by_id["key_1"] = stored(secret, is_disabled=True)
    await directory.apply(Change(Scope.KEY, "key_1"))
    with pytest.raises(AuthenticationFailed, match="disabled"):
        await directory.caller(secret)

    del source.by_id["key_1"]
    await directory.apply(Change(Scope.KEY, "key_1"))
    with pytest.raises(AuthenticationFailed, match="Incorrect"):
        await directory.caller(secret)


async def test_a_team_change_updates_every_key_of_the_team() -> None:
    one, two = new_secret(), new_secret()
    team = TeamRecord(id="team_1", name="t")
    source = MemorySource(
        [
            stored(one, "key_1", team_id="team_1", team=team),
            stored(two, "key_2", team_id="team_1", team=team),
        ]
    )
    directory = await loaded(source, Clock())

    limited = TeamRecord(id="team_1", name="t", limits=Limits(parallel=2))
    for key_id in ("key_1", "key_2"):
        source.by_id[key_id] = Membership(source.by_id[key_id].key, limited)
    await directory.apply(Change(Scope.TEAM, "team_1"))

    for secret in (one, two):
        caller = await directory.caller(secret)
        assert caller.subjects == (Subject(Scope.TEAM, "team_1", Limits(parallel=2)),)


async def test_a_reload_drops_deleted_keys_and_keeps_static_ones() -> None:
    secret = new_secret()
    source = MemorySource([stored(secret)])
    directory = await loaded(source, Clock(), static=("sk-static",))

    source.by_id.clear()
    await directory.reload()

    with pytest.raises(AuthenticationFailed):
        await directory.caller(secret)
    assert (await directory.caller("sk-static")).key_id.startswith("static-")


async def test_last_used_times_are_written_in_a_batch() -> None:
    clock, secret = Clock(), new_secret()
    source = MemorySource([stored(secret)])
    directory = await loaded(source, clock)

    await directory.caller(secret)
    await directory.flush_last_used()

    assert source.touched == {"key_1": at(clock.now)}


async def test_before_start_up_only_static_keys_are_known() -> None:
    source = MemorySource([stored(new_secret())])
    directory = KeyDirectory(("sk-static",), source, negative_ttl_s=5.0)

    with pytest.raises(AuthenticationFailed):
        await directory.caller("sk-gw-anything")
    assert source.finds == 0
    assert (await directory.caller("sk-static")).key_id.startswith("static-")


async def test_a_change_applied_during_a_reload_is_not_undone_by_it() -> None:
    secret = new_secret()
    source = MemorySource([stored(secret)])
    directory = await loaded(source, Clock())
    source.find_delay_s = 0.05

    reloading = asyncio.ensure_future(directory.reload())  # reads the key as enabled
    await asyncio.sleep(0.01)
    source.by_id["key_1"] = stored(secret, is_disabled=True)
    await directory.apply(Change(Scope.KEY, "key_1"))
    await reloading

    with pytest.raises(AuthenticationFailed, match="disabled"):
        await directory.caller(secret)


async def test_static_keys_are_not_written_back_as_used() -> None:
    source = MemorySource()
    directory = await loaded(source, Clock(), static=("sk-static",))

    await directory.caller("sk-static")
    await directory.flush_last_used()

    assert source.touched == {}
