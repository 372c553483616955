"""KeyAdmin on SQLite and PostgreSQL: what administrators do with keys and teams, each
committed change announced once."""

from datetime import UTC, datetime, timedelta

import pytest

from ai_gateway.errors import Conflict, NotFound
from ai_gateway.keys.admin import KeyAdmin
from ai_gateway.keys.caller import Limits, Scope
from ai_gateway.keys.payloads import (
    KeyCreate,
    KeyQuery,
    KeyRotate,
    KeyUpdate,
    PageQuery,
    TeamCreate,
    TeamUpdate,
)
from ai_gateway.keys.records import Change
from ai_gateway.keys.secret import digest
from ai_gateway.keys.sql import KeyRepository

pytestmark = pytest.mark.anyio


def key_change(key_id: str) -> Change:
    return Change(Scope.KEY, key_id)


async def test_a_new_key_is_shown_once_and_stored_as_its_digest(
    admin: KeyAdmin, repository: KeyRepository, changes: list[Change]
) -> None:
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    issued = await admin.create_key(
        KeyCreate(name="ci", models=["llama"], rpm_limit=5, expires_at=expiry, metadata={"a": 1})
    )

    record = issued.record
    assert issued.secret.startswith("sk-gw-")
    assert issued.secret not in repr(issued)
    assert record.id.startswith("key_")
    assert (record.digest, record.prefix) == (digest(issued.secret), issued.secret[:12])
    assert (record.models, record.limits, record.expires_at) == (("llama",), Limits(rpm=5), expiry)
    assert record.metadata == {"a": 1}
    assert await repository.key(record.id) == record
    assert changes == [key_change(record.id)]


async def test_a_key_joins_a_team_named_by_id_or_by_name(admin: KeyAdmin) -> None:
    team = await admin.create_team(TeamCreate(name="eng", tpm_limit=1000))

    by_name = await admin.create_key(KeyCreate(name="a", team="eng"))
    by_id = await admin.create_key(KeyCreate(name="b", team=team.id))

    assert by_name.record.team_id == by_id.record.team_id == team.id


async def test_an_unknown_team_is_a_404_naming_the_field(admin: KeyAdmin) -> None:
    with pytest.raises(NotFound) as caught:
        await admin.create_key(KeyCreate(name="a", team="ghosts"))

    assert caught.value.envelope() == {
        "error": {
            "message": "No team with id or name 'ghosts'.",
            "type": "invalid_request_error",
            "param": "team",
            "code": "team_not_found",
        }
    }


async def test_keys_page_in_creation_order(admin: KeyAdmin) -> None:
    created = [(await admin.create_key(KeyCreate(name=f"k{n}"))).record.id for n in range(5)]

    first = await admin.list_keys(KeyQuery(limit=2))
    second = await admin.list_keys(KeyQuery(limit=2, after=first.items[-1].id))
    last = await admin.list_keys(KeyQuery(limit=2, after=second.items[-1].id))
    beyond = await admin.list_keys(KeyQuery(after=created[-1]))

    pages = [first, second, last]
    assert [[k.id for k in page.items] for page in pages] == [
        created[0:2],
        created[2:4],
        created[4:],
    ]
    assert [page.has_more for page in pages] == [True, True, False]
    assert (list(beyond.items), beyond.has_more) == ([], False)


async def test_keys_list_by_team(admin: KeyAdmin) -> None:
    await admin.create_team(TeamCreate(name="eng"))
    mine = await admin.create_key(KeyCreate(name="a", team="eng"))
    await admin.create_key(KeyCreate(name="b"))

    page = await admin.list_keys(KeyQuery(team="eng"))

    assert [k.id for k in page.items] == [mine.record.id]


async def test_an_update_changes_what_it_names_and_null_clears(
    admin: KeyAdmin, changes: list[Change]
) -> None:
    await admin.create_team(TeamCreate(name="eng"))
    created = await admin.create_key(
        KeyCreate(name="a", team="eng", models=["m"], rpm_limit=5, tpm_limit=50, metadata={"x": 1})
    )
    key_id = created.record.id

    updated = await admin.update_key(
        key_id,
        KeyUpdate.model_validate(
            {"name": "renamed", "team": None, "models": None, "rpm_limit": None, "metadata": None}
        ),
    )

    assert (updated.name, updated.team_id, updated.models) == ("renamed", None, None)
    assert updated.limits == Limits(tpm=50)
    assert updated.metadata == {}
    assert updated.updated_at is not None
    assert created.record.updated_at is not None
    assert updated.updated_at >= created.record.updated_at
    assert changes == [key_change(key_id), key_change(key_id)]


async def test_an_empty_update_changes_nothing(admin: KeyAdmin, changes: list[Change]) -> None:
    created = await admin.create_key(KeyCreate(name="a"))

    assert await admin.update_key(created.record.id, KeyUpdate()) == created.record
    assert changes == [key_change(created.record.id)]


async def test_a_disabled_key_can_be_enabled_again(admin: KeyAdmin) -> None:
    key_id = (await admin.create_key(KeyCreate(name="a"))).record.id

    disabled = await admin.disable_key(key_id)
    enabled = await admin.update_key(key_id, KeyUpdate(disabled=False))

    assert (disabled.is_disabled, enabled.is_disabled) == (True, False)


async def test_unknown_keys_are_404s(admin: KeyAdmin, changes: list[Change]) -> None:
    attempts = [
        admin.key("key_x"),
        admin.update_key("key_x", KeyUpdate(rpm_limit=1)),
        admin.update_key("key_x", KeyUpdate()),
        admin.disable_key("key_x"),
        admin.rotate_key("key_x", KeyRotate()),
        admin.delete_key("key_x"),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound) as caught:
            await attempt
        assert caught.value.envelope()["error"] == {
            "message": "No key with id 'key_x'.",
            "type": "invalid_request_error",
            "param": None,
            "code": "key_not_found",
        }
    assert changes == []


async def test_a_deleted_key_is_gone(
    admin: KeyAdmin, repository: KeyRepository, changes: list[Change]
) -> None:
    issued = await admin.create_key(KeyCreate(name="a"))

    await admin.delete_key(issued.record.id)

    assert await repository.find(digest(issued.secret)) is None
    assert changes == [key_change(issued.record.id)] * 2


async def test_rotation_without_grace_ends_the_old_secret_at_once(
    admin: KeyAdmin, repository: KeyRepository
) -> None:
    old = await admin.create_key(KeyCreate(name="a", rpm_limit=3))

    new = await admin.rotate_key(old.record.id, KeyRotate())

    assert new.secret != old.secret
    assert new.record.limits == Limits(rpm=3)
    assert await repository.find(digest(old.secret)) is None
    found = await repository.find(digest(new.secret))
    assert found is not None
    assert found.key == new.record


async def test_rotation_with_grace_keeps_the_old_secret_until_it_ends(
    admin: KeyAdmin, repository: KeyRepository, changes: list[Change]
) -> None:
    old = await admin.create_key(KeyCreate(name="a"))
    before = datetime.now(UTC)

    new = await admin.rotate_key(old.record.id, KeyRotate(grace_period_s=3600))

    grace = new.record.previous_expires_at
    assert grace is not None
    assert before + timedelta(seconds=3600) <= grace <= datetime.now(UTC) + timedelta(hours=1)
    assert await repository.find(digest(old.secret)) is not None
    assert changes == [key_change(old.record.id)] * 2

    await repository.update_key(
        old.record.id, {"previous_expires_at": datetime.now(UTC) - timedelta(seconds=1)}
    )
    assert await repository.find(digest(old.secret)) is None
    assert await repository.find(digest(new.secret)) is not None


async def test_teams_are_created_listed_updated_and_disabled(
    admin: KeyAdmin, changes: list[Change]
) -> None:
    eng = await admin.create_team(TeamCreate(name="eng", rpm_limit=10, metadata={"o": "x"}))
    ops = await admin.create_team(TeamCreate(name="ops"))

    listed = await admin.list_teams(PageQuery(limit=1))
    updated = await admin.update_team(
        eng.id, TeamUpdate.model_validate({"rpm_limit": None, "tpm_limit": 7})
    )
    disabled = await admin.disable_team(ops.id)

    assert eng.id.startswith("team_")
    assert (list(listed.items), listed.has_more) == ([eng], True)
    assert updated.limits == Limits(tpm=7)
    assert updated.metadata == {"o": "x"}
    assert disabled.is_disabled
    assert await admin.team(ops.id) == disabled
    assert changes == [Change(Scope.TEAM, eng.id), Change(Scope.TEAM, ops.id)]


async def test_team_name_clashes_are_409s(admin: KeyAdmin) -> None:
    await admin.create_team(TeamCreate(name="eng"))
    ops = await admin.create_team(TeamCreate(name="ops"))

    with pytest.raises(Conflict):
        await admin.create_team(TeamCreate(name="eng"))
    with pytest.raises(Conflict):
        await admin.update_team(ops.id, TeamUpdate(name="eng"))


async def test_a_team_is_deleted_once_it_has_no_keys(
    admin: KeyAdmin, changes: list[Change]
) -> None:
    team = await admin.create_team(TeamCreate(name="eng"))
    key = await admin.create_key(KeyCreate(name="a", team="eng"))

    with pytest.raises(Conflict) as caught:
        await admin.delete_team(team.id)
    await admin.delete_key(key.record.id)
    await admin.delete_team(team.id)

    assert caught.value.envelope() == {
        "error": {
            "message": f"Team {team.id} still has keys: delete them or move them to another "
            "team first.",
            "type": "invalid_request_error",
            "param": None,
            "code": "conflict",
        }
    }
    assert changes[-1] == Change(Scope.TEAM, team.id)
    with pytest.raises(NotFound, match=f"^No team with id '{team.id}'.$"):
        await admin.team(team.id)


async def test_unknown_teams_are_404s(admin: KeyAdmin) -> None:
    for attempt in [
        admin.team("team_x"),
        admin.update_team("team_x", TeamUpdate(rpm_limit=1)),
        admin.disable_team("team_x"),
        admin.delete_team("team_x"),
        admin.list_keys(KeyQuery(team="team_x")),
    ]:
        with pytest.raises(NotFound) as caught:
            await attempt
        assert caught.value.code == "team_not_found"
