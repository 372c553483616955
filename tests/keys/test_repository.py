"""KeyRepository on SQLite and PostgreSQL: records round-trip, look-ups by digest (and by a
replaced digest during its grace), what the key directory loads, last-used times, conflicts."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from ai_gateway.errors import Conflict
from ai_gateway.keys.caller import Limits, Scope
from ai_gateway.keys.records import Change, KeyRecord, Membership, TeamRecord
from ai_gateway.keys.secret import digest, display_prefix
from ai_gateway.keys.sql import KeyRepository
from ai_gateway.keys.tables import keys

pytestmark = pytest.mark.anyio

NOW = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def a_team(team_id: str = "team_1", name: str = "eng", **fields: object) -> TeamRecord:
    values: dict[str, object] = {"created_at": NOW, "updated_at": NOW, **fields}
    return TeamRecord(id=team_id, name=name, **values)  # type: ignore[arg-type]


def a_key(key_id: str = "key_1", plaintext: str = "sk-gw-one", **fields: object) -> KeyRecord:
    values: dict[str, object] = {"created_at": NOW, "updated_at": NOW, **fields}
    return KeyRecord(
        id=key_id,
        name=f"{key_id} name",
        digest=digest(plaintext),
        prefix=display_prefix(plaintext),
        **values,  # type: ignore[arg-type]
    )


async def test_a_team_round_trips(repository: KeyRepository) -> None:
    team = a_team(limits=Limits(rpm=60, tpm=1000, parallel=4), metadata={"cost": {"center": 7}})

    await repository.add_team(team)

    assert await repository.team("team_1") == team
    assert await repository.team_named("eng") == team
    assert await repository.team("team_2") is None
    assert await repository.team_named("ops") is None


async def test_a_duplicate_team_name_is_a_conflict(repository: KeyRepository) -> None:
    await repository.add_team(a_team())
    await repository.add_team(a_team("team_2", "ops"))

    with pytest.raises(Conflict) as added:
        await repository.add_team(a_team("team_3", "eng"))
    with pytest.raises(Conflict) as renamed:
        await repository.update_team("team_2", {"name": "eng"})

    expected = {
        "message": "A team named 'eng' already exists.",
        "type": "invalid_request_error",
        "param": "name",
        "code": "conflict",
    }
    assert added.value.envelope() == renamed.value.envelope() == {"error": expected}
    assert added.value.status_code == 409


async def test_a_key_round_trips_with_aware_utc_times(repository: KeyRepository) -> None:
    await repository.add_team(a_team())
    key = a_key(
        team_id="team_1",
        models=("llama-3.3-70b", "cerebras/qwen-3"),
        limits=Limits(rpm=5),
        expires_at=NOW + timedelta(days=30),
        metadata={"owner": "ci", "tags": ["a", "b"]},
        last_used_at=NOW,
    )

    await repository.add_key(key)
    stored = await repository.key("key_1")

    assert stored == key
    assert stored is not None
    assert stored.created_at is not None
    assert stored.created_at.tzinfo is UTC


async def test_a_key_stores_its_digest_and_prefix_not_its_secret(
    repository: KeyRepository,
) -> None:
    await repository.add_key(a_key(plaintext="sk-gw-very-secret-value"))

    async with repository.engine.connect() as db:
        row = (await db.execute(select(keys))).one()._mapping

    assert bytes(row["digest"]) == digest("sk-gw-very-secret-value")
    assert row["prefix"] == "sk-gw-very-s"
    assert not any("very-secret-value" in str(value) for value in row.values())


async def test_a_key_of_an_unknown_team_is_refused(repository: KeyRepository) -> None:
    with pytest.raises(Conflict, match="team no longer exists"):
        await repository.add_key(a_key(team_id="team_gone"))


async def test_find_matches_the_current_digest(repository: KeyRepository) -> None:
    await repository.add_team(a_team(limits=Limits(tpm=10)))
    await repository.add_key(a_key(team_id="team_1"))

    found = await repository.find(digest("sk-gw-one"))

    assert found == Membership(key=a_key(team_id="team_1"), team=a_team(limits=Limits(tpm=10)))
    assert await repository.find(digest("sk-gw-other")) is None


async def test_find_matches_a_replaced_digest_only_during_its_grace(
    repository: KeyRepository,
) -> None:
    await repository.add_key(a_key())
    soon = datetime.now(UTC) + timedelta(minutes=5)

    rotated = await repository.rotate_key(
        "key_1", digest=digest("sk-gw-two"), prefix="sk-gw-two", grace_until=soon, at=NOW
    )

    assert rotated is not None
    assert rotated.previous_digest == digest("sk-gw-one")
    assert await repository.find(digest("sk-gw-one")) == Membership(rotated, None)
    assert await repository.find(digest("sk-gw-two")) == Membership(rotated, None)

    past = datetime.now(UTC) - timedelta(seconds=1)
    await repository.update_key("key_1", {"previous_expires_at": past})

    assert await repository.find(digest("sk-gw-one")) is None
    assert await repository.find(digest("sk-gw-two")) is not None


async def test_rotating_without_grace_forgets_the_old_digest(repository: KeyRepository) -> None:
    await repository.add_key(a_key())

    rotated = await repository.rotate_key(
        "key_1", digest=digest("sk-gw-two"), prefix="sk-gw-two", grace_until=None, at=NOW
    )

    assert rotated is not None
    assert (rotated.previous_digest, rotated.previous_expires_at) == (None, None)
    assert await repository.find(digest("sk-gw-one")) is None
    assert (
        await repository.rotate_key("key_2", digest=b"x" * 32, prefix="x", grace_until=None, at=NOW)
        is None
    )


async def test_memberships_are_every_key_with_its_team(repository: KeyRepository) -> None:
    await repository.add_team(a_team(is_disabled=True))
    await repository.add_key(a_key("key_1", "sk-gw-one", team_id="team_1"))
    await repository.add_key(a_key("key_2", "sk-gw-two", is_disabled=True))

    memberships = await repository.memberships()

    assert memberships == [
        Membership(a_key("key_1", "sk-gw-one", team_id="team_1"), a_team(is_disabled=True)),
        Membership(a_key("key_2", "sk-gw-two", is_disabled=True), None),
    ]


async def test_memberships_of_a_change_are_the_keys_it_concerns(
    repository: KeyRepository,
) -> None:
    await repository.add_team(a_team())
    await repository.add_key(a_key("key_1", "sk-gw-one", team_id="team_1"))
    await repository.add_key(a_key("key_2", "sk-gw-two", team_id="team_1"))
    await repository.add_key(a_key("key_3", "sk-gw-three"))

    of_team = await repository.memberships_of(Change(Scope.TEAM, "team_1"))
    of_key = await repository.memberships_of(Change(Scope.KEY, "key_3"))
    await repository.delete_key("key_3")
    of_deleted = await repository.memberships_of(Change(Scope.KEY, "key_3"))

    assert [m.key.id for m in of_team] == ["key_1", "key_2"]
    assert of_key == [Membership(a_key("key_3", "sk-gw-three"), None)]
    assert of_deleted == []


async def test_touch_records_last_use_and_never_goes_back(repository: KeyRepository) -> None:
    await repository.add_key(a_key("key_1", "sk-gw-one"))
    await repository.add_key(a_key("key_2", "sk-gw-two"))
    later = NOW + timedelta(minutes=1)

    await repository.touch({})
    await repository.touch({"key_1": later, "key_2": NOW, "key_gone": NOW})
    await repository.touch({"key_1": NOW})

    first, second = await repository.keys(limit=10)
    assert (first.last_used_at, second.last_used_at) == (later, NOW)


async def test_keys_page_in_id_order_maybe_one_teams(repository: KeyRepository) -> None:
    await repository.add_team(a_team())
    for number in range(1, 6):
        team_id = "team_1" if number % 2 else None
        await repository.add_key(a_key(f"key_{number}", f"sk-gw-{number}", team_id=team_id))

    first = await repository.keys(limit=2)
    second = await repository.keys(limit=2, after=first[-1].id)
    of_team = await repository.keys(limit=10, after="key_1", team_id="team_1")

    assert [k.id for k in first + second] == ["key_1", "key_2", "key_3", "key_4"]
    assert [k.id for k in of_team] == ["key_3", "key_5"]


async def test_a_team_with_keys_cannot_be_deleted(repository: KeyRepository) -> None:
    await repository.add_team(a_team())
    await repository.add_key(a_key(team_id="team_1"))

    with pytest.raises(Conflict) as caught:
        await repository.delete_team("team_1")
    await repository.delete_key("key_1")

    assert caught.value.message == (
        "Team team_1 still has keys: delete them or move them to another team first."
    )
    assert await repository.delete_team("team_1") is True
    assert await repository.delete_team("team_1") is False


async def test_updates_return_the_record_as_it_is_now(repository: KeyRepository) -> None:
    await repository.add_team(a_team())
    await repository.add_key(a_key())

    key = await repository.update_key("key_1", {"rpm_limit": 9, "team_id": "team_1"})
    team = await repository.update_team("team_1", {"disabled": True})

    assert key == replace(a_key(), limits=Limits(rpm=9), team_id="team_1")
    assert team == a_team(is_disabled=True)
    assert await repository.update_key("key_2", {"rpm_limit": 9}) is None
    assert await repository.update_team("team_2", {"disabled": True}) is None


async def test_has_limits_sees_limits_of_keys_and_of_teams(repository: KeyRepository) -> None:
    await repository.add_key(a_key())
    assert await repository.has_limits() is False

    await repository.add_team(a_team(limits=Limits(parallel=2)))
    assert await repository.has_limits() is True
