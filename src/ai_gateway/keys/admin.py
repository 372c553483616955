"""KeyAdmin: what an administrator does with keys and teams (the admin API and the CLI),
each committed change announced so every gateway's key directory follows at once; a key or team
with a budget is shown with its current period's spend."""

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from ai_gateway.errors import NotFound
from ai_gateway.keys.caller import Budget, Limits, Period, Scope, Subject
from ai_gateway.keys.payloads import (
    KeyCreate,
    KeyQuery,
    KeyRotate,
    KeyUpdate,
    PageQuery,
    TeamCreate,
    TeamUpdate,
)
from ai_gateway.keys.records import Change, KeyRecord, Spend, TeamRecord
from ai_gateway.keys.secret import digest, display_prefix, new_secret
from ai_gateway.keys.sql import KeyRepository
from ai_gateway.keys.views import Page

Notify = Callable[[Change], Awaitable[None]]
Shown = TypeVar("Shown", KeyRecord, TeamRecord)


class SpendReader(Protocol):
    """Where a budget's spend is read (the gateway's budget store, or the usage ledger)."""

    async def spend(self, subject: Subject) -> Spend:
        """The current period's spend of a subject that has a budget."""
        ...


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created or rotated, with its secret: shown once, stored nowhere."""

    record: KeyRecord
    secret: str = field(repr=False)


def new_id(kind: str) -> str:
    """`<kind>_` + the time in microseconds + random bits: ids sort in creation order, so a
    list pages by id."""
    return f"{kind}_{time.time_ns() // 1000:014x}{secrets.token_hex(8)}"


def now() -> datetime:
    """The current time, UTC."""
    return datetime.now(UTC)


def key_not_found(key_id: str) -> NotFound:
    """The 404 for an unknown key id."""
    return NotFound(f"No key with id '{key_id}'.", code="key_not_found")


def team_not_found(team_id: str) -> NotFound:
    """The 404 for an unknown team id."""
    return NotFound(f"No team with id '{team_id}'.", code="team_not_found")


def limits_of(request: KeyCreate | TeamCreate) -> Limits:
    """The request's three limits."""
    return Limits(
        rpm=request.rpm_limit, tpm=request.tpm_limit, parallel=request.max_parallel_requests
    )


def budget_of(request: KeyCreate | TeamCreate) -> Budget | None:
    """The request's budget (per month unless it names a period)."""
    if request.budget_usd is None:
        return None
    return Budget(request.budget_usd, Period(request.budget_period or Period.MONTH))


def changed_columns(request: KeyUpdate | TeamUpdate) -> dict[str, Any]:
    """The fields an update names, as columns (their names are the same); null metadata is
    empty metadata; a budget cleared loses its period too, unless the update sets one."""
    values = request.model_dump(exclude_unset=True)
    if "metadata" in values and values["metadata"] is None:
        values["metadata"] = {}
    if "budget_usd" in values and values["budget_usd"] is None:
        values.setdefault("budget_period", None)
    return values


class KeyAdmin:
    """Create, list, show, update, disable, rotate and delete keys and teams."""

    def __init__(
        self, repository: KeyRepository, notify: Notify, spend: SpendReader | None = None
    ) -> None:
        self.repository = repository
        self.notify = notify
        self.spend = spend

    async def shown(self, record: Shown) -> Shown:
        """The record with its budget's current spend, when it has a budget and a reader."""
        if record.budget is None or self.spend is None:
            return record
        scope = Scope.KEY if isinstance(record, KeyRecord) else Scope.TEAM
        subject = Subject(scope, record.id, record.limits, record.budget)
        return replace(record, spend=await self.spend.spend(subject))

    async def create_key(self, request: KeyCreate) -> IssuedKey:
        """A new key; its secret is returned here and never again."""
        team_id = await self._team_id(request.team)
        secret, moment = new_secret(), now()
        record = KeyRecord(
            id=new_id("key"),
            name=request.name,
            digest=digest(secret),
            prefix=display_prefix(secret),
            team_id=team_id,
            models=None if request.models is None else tuple(request.models),
            limits=limits_of(request),
            budget=budget_of(request),
            expires_at=request.expires_at,
            metadata=request.metadata or {},
            created_at=moment,
            updated_at=moment,
        )
        await self.repository.add_key(record)
        await self.notify(Change(Scope.KEY, record.id))
        return IssuedKey(await self.shown(record), secret)

    async def list_keys(self, query: KeyQuery) -> Page[KeyRecord]:
        """A page of keys in creation order, maybe only one team's."""
        team_id = await self._team_id(query.team)
        found = await self.repository.keys(
            limit=query.limit + 1, after=query.after, team_id=team_id
        )
        items = [await self.shown(record) for record in found[: query.limit]]
        return Page(items, has_more=len(found) > query.limit)

    async def key(self, key_id: str) -> KeyRecord:
        """The key with this id."""
        record = await self.repository.key(key_id)
        if record is None:
            raise key_not_found(key_id)
        return await self.shown(record)

    async def update_key(self, key_id: str, request: KeyUpdate) -> KeyRecord:
        """Apply the fields the update names."""
        values = changed_columns(request)
        if "team" in values:
            values["team_id"] = await self._team_id(values.pop("team"))
        return await self._change_key(key_id, values)

    async def disable_key(self, key_id: str) -> KeyRecord:
        """Refuse the key from now on (an update can enable it again)."""
        return await self._change_key(key_id, {"disabled": True})

    async def rotate_key(self, key_id: str, request: KeyRotate) -> IssuedKey:
        """A new secret for the key; the replaced one works for the grace period (none by
        default)."""
        secret, moment = new_secret(), now()
        grace = request.grace_period_s
        record = await self.repository.rotate_key(
            key_id,
            digest=digest(secret),
            prefix=display_prefix(secret),
            grace_until=moment + timedelta(seconds=grace) if grace else None,
            at=moment,
        )
        if record is None:
            raise key_not_found(key_id)
        await self.notify(Change(Scope.KEY, key_id))
        return IssuedKey(await self.shown(record), secret)

    async def delete_key(self, key_id: str) -> None:
        """Delete the key; its secret stops working."""
        if not await self.repository.delete_key(key_id):
            raise key_not_found(key_id)
        await self.notify(Change(Scope.KEY, key_id))

    async def _change_key(self, key_id: str, values: dict[str, Any]) -> KeyRecord:
        if not values:
            return await self.key(key_id)
        record = await self.repository.update_key(key_id, {**values, "updated_at": now()})
        if record is None:
            raise key_not_found(key_id)
        await self.notify(Change(Scope.KEY, key_id))
        return await self.shown(record)

    async def _team_id(self, reference: str | None) -> str | None:
        """The id of the team a request names by id or by name."""
        if reference is None:
            return None
        team = await self.repository.team(reference) or await self.repository.team_named(reference)
        if team is None:
            raise NotFound(
                f"No team with id or name '{reference}'.", param="team", code="team_not_found"
            )
        return team.id

    async def create_team(self, request: TeamCreate) -> TeamRecord:
        """A new team (its name must be free)."""
        moment = now()
        record = TeamRecord(
            id=new_id("team"),
            name=request.name,
            limits=limits_of(request),
            budget=budget_of(request),
            metadata=request.metadata or {},
            created_at=moment,
            updated_at=moment,
        )
        await self.repository.add_team(record)
        return await self.shown(record)

    async def list_teams(self, query: PageQuery) -> Page[TeamRecord]:
        """A page of teams in creation order."""
        found = await self.repository.teams(limit=query.limit + 1, after=query.after)
        items = [await self.shown(record) for record in found[: query.limit]]
        return Page(items, has_more=len(found) > query.limit)

    async def team(self, team_id: str) -> TeamRecord:
        """The team with this id."""
        record = await self.repository.team(team_id)
        if record is None:
            raise team_not_found(team_id)
        return await self.shown(record)

    async def update_team(self, team_id: str, request: TeamUpdate) -> TeamRecord:
        """Apply the fields the update names; every key of the team follows."""
        return await self._change_team(team_id, changed_columns(request))

    async def disable_team(self, team_id: str) -> TeamRecord:
        """Refuse every key of the team from now on."""
        return await self._change_team(team_id, {"disabled": True})

    async def delete_team(self, team_id: str) -> None:
        """Delete a team that has no keys left."""
        if not await self.repository.delete_team(team_id):
            raise team_not_found(team_id)
        await self.notify(Change(Scope.TEAM, team_id))

    async def _change_team(self, team_id: str, values: dict[str, Any]) -> TeamRecord:
        if not values:
            return await self.team(team_id)
        record = await self.repository.update_team(team_id, {**values, "updated_at": now()})
        if record is None:
            raise team_not_found(team_id)
        await self.notify(Change(Scope.TEAM, team_id))
        return await self.shown(record)
