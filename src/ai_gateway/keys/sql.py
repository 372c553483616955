"""KeyRepository: stored keys and teams in SQL (SQLite or PostgreSQL), as records."""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    RowMapping,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.errors import Conflict
from ai_gateway.keys.caller import Budget, Limits, Period, Scope
from ai_gateway.keys.records import Change, KeyRecord, Membership, TeamRecord
from ai_gateway.keys.tables import keys, teams

TEAM_LABEL = "team__"  # not "team_": keys has its own team_id
LIMIT_COLUMNS = ("rpm_limit", "tpm_limit", "max_parallel_requests")
COUNTED_COLUMNS = (*LIMIT_COLUMNS, "budget_usd")
"""A key or team that sets any of these is counted (limits/, budgets/)."""


def limits_of(row: RowMapping, label: str = "") -> Limits:
    """The three limit columns as Limits."""
    return Limits(
        rpm=row[f"{label}rpm_limit"],
        tpm=row[f"{label}tpm_limit"],
        parallel=row[f"{label}max_parallel_requests"],
    )


def budget_of(row: RowMapping, label: str = "") -> Budget | None:
    """The budget columns as a Budget (None without `budget_usd`; a month by default)."""
    limit = row[f"{label}budget_usd"]
    if limit is None:
        return None
    period = row[f"{label}budget_period"]
    return Budget(limit_usd=limit, period=Period(period) if period else Period.MONTH)


def team_of(row: RowMapping, label: str = "") -> TeamRecord:
    """A `teams` row (its columns maybe prefixed by `label`) as a record."""
    return TeamRecord(
        id=row[f"{label}id"],
        name=row[f"{label}name"],
        limits=limits_of(row, label),
        budget=budget_of(row, label),
        is_disabled=row[f"{label}disabled"],
        metadata=row[f"{label}metadata"],
        created_at=row[f"{label}created_at"],
        updated_at=row[f"{label}updated_at"],
    )


def key_of(row: RowMapping) -> KeyRecord:
    """A `keys` row as a record."""
    models = row["models"]
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        digest=bytes(row["digest"]),
        prefix=row["prefix"],
        team_id=row["team_id"],
        models=None if models is None else tuple(models),
        limits=limits_of(row),
        budget=budget_of(row),
        expires_at=row["expires_at"],
        is_disabled=row["disabled"],
        metadata=row["metadata"],
        previous_digest=None if row["previous_digest"] is None else bytes(row["previous_digest"]),
        previous_expires_at=row["previous_expires_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_used_at=row["last_used_at"],
    )


def membership_of(row: Row[Any]) -> Membership:
    """A row of `keys` joined with its team's labelled columns."""
    values = row._mapping
    team = None if values[f"{TEAM_LABEL}id"] is None else team_of(values, TEAM_LABEL)
    return Membership(key=key_of(values), team=team)


def with_teams() -> Select[Any]:
    """Keys with their team's columns (NULL for a key without a team)."""
    team_columns = [column.label(f"{TEAM_LABEL}{column.name}") for column in teams.c]
    return select(keys, *team_columns).select_from(keys.outerjoin(teams))


def team_values(team: TeamRecord) -> dict[str, Any]:
    """A team record as `teams` column values."""
    return {
        "id": team.id,
        "name": team.name,
        **limit_values(team.limits),
        **budget_values(team.budget),
        "disabled": team.is_disabled,
        "metadata": team.metadata,
        "created_at": team.created_at,
        "updated_at": team.updated_at,
    }


def key_values(key: KeyRecord) -> dict[str, Any]:
    """A key record as `keys` column values."""
    return {
        "id": key.id,
        "name": key.name,
        "team_id": key.team_id,
        "digest": key.digest,
        "prefix": key.prefix,
        "previous_digest": key.previous_digest,
        "previous_expires_at": key.previous_expires_at,
        "models": None if key.models is None else list(key.models),
        **limit_values(key.limits),
        **budget_values(key.budget),
        "expires_at": key.expires_at,
        "disabled": key.is_disabled,
        "metadata": key.metadata,
        "created_at": key.created_at,
        "updated_at": key.updated_at,
        "last_used_at": key.last_used_at,
    }


def limit_values(limits: Limits) -> dict[str, int | None]:
    """Limits as the three limit columns."""
    return {
        "rpm_limit": limits.rpm,
        "tpm_limit": limits.tpm,
        "max_parallel_requests": limits.parallel,
    }


def budget_values(budget: Budget | None) -> dict[str, Any]:
    """A budget as the two budget columns."""
    if budget is None:
        return {"budget_usd": None, "budget_period": None}
    return {"budget_usd": budget.limit_usd, "budget_period": budget.period.value}


def page(table: Table, *, limit: int, after: str | None) -> Select[Any]:
    """Up to `limit` rows after the id `after`, in id order (ids grow with creation time)."""
    query = select(table).order_by(table.c.id).limit(limit)
    return query if after is None else query.where(table.c.id > after)


def duplicate_name(name: str) -> Conflict:
    """The 409 for a team name already taken."""
    return Conflict(f"A team named '{name}' already exists.", param="name")


class KeyRepository:
    """Keys and teams over an async engine; every method is one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add_team(self, team: TeamRecord) -> None:
        """Store a new team; Conflict if its name is taken."""
        try:
            async with self.engine.begin() as connection:
                await connection.execute(insert(teams).values(team_values(team)))
        except IntegrityError:
            raise duplicate_name(team.name) from None

    async def team(self, team_id: str) -> TeamRecord | None:
        """The team with this id."""
        return await self._one_team(teams.c.id == team_id)

    async def team_named(self, name: str) -> TeamRecord | None:
        """The team with this name."""
        return await self._one_team(teams.c.name == name)

    async def _one_team(self, condition: ColumnElement[bool]) -> TeamRecord | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(teams).where(condition))).first()
        return None if row is None else team_of(row._mapping)

    async def teams(self, *, limit: int, after: str | None = None) -> list[TeamRecord]:
        """A page of teams in creation order."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(page(teams, limit=limit, after=after))
            return [team_of(row._mapping) for row in rows]

    async def update_team(self, team_id: str, values: Mapping[str, Any]) -> TeamRecord | None:
        """Set some `teams` columns; the team as it is now (None if there is no such team)."""
        try:
            async with self.engine.begin() as connection:
                await connection.execute(update(teams).where(teams.c.id == team_id).values(values))
                row = (await connection.execute(select(teams).where(teams.c.id == team_id))).first()
        except IntegrityError:
            raise duplicate_name(str(values.get("name"))) from None
        return None if row is None else team_of(row._mapping)

    async def delete_team(self, team_id: str) -> bool:
        """Delete a team without keys (Conflict otherwise); whether it existed."""
        has_keys = exists().where(keys.c.team_id == team_id)
        try:
            async with self.engine.begin() as connection:
                if await connection.scalar(select(has_keys)):
                    raise team_has_keys(team_id)
                result = await connection.execute(delete(teams).where(teams.c.id == team_id))
        except IntegrityError:  # a key was added to the team meanwhile
            raise team_has_keys(team_id) from None
        return result.rowcount > 0

    async def add_key(self, key: KeyRecord) -> None:
        """Store a new key."""
        try:
            async with self.engine.begin() as connection:
                await connection.execute(insert(keys).values(key_values(key)))
        except IntegrityError:  # its team was deleted meanwhile
            raise Conflict("The key's team no longer exists.", param="team") from None

    async def key(self, key_id: str) -> KeyRecord | None:
        """The key with this id."""
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(keys).where(keys.c.id == key_id))).first()
        return None if row is None else key_of(row._mapping)

    async def keys(
        self, *, limit: int, after: str | None = None, team_id: str | None = None
    ) -> list[KeyRecord]:
        """A page of keys in creation order, maybe only one team's."""
        query = page(keys, limit=limit, after=after)
        if team_id is not None:
            query = query.where(keys.c.team_id == team_id)
        async with self.engine.connect() as connection:
            return [key_of(row._mapping) for row in await connection.execute(query)]

    async def update_key(self, key_id: str, values: Mapping[str, Any]) -> KeyRecord | None:
        """Set some `keys` columns; the key as it is now (None if there is no such key)."""
        try:
            async with self.engine.begin() as connection:
                await connection.execute(update(keys).where(keys.c.id == key_id).values(values))
                row = (await connection.execute(select(keys).where(keys.c.id == key_id))).first()
        except IntegrityError:  # its new team was deleted meanwhile
            raise Conflict("The key's team no longer exists.", param="team") from None
        return None if row is None else key_of(row._mapping)

    async def rotate_key(
        self,
        key_id: str,
        *,
        digest: bytes,
        prefix: str,
        grace_until: datetime | None,
        at: datetime,
    ) -> KeyRecord | None:
        """Replace the key's secret in one statement (the current digest becomes the previous
        one, kept until `grace_until`; None ends the old secret now)."""
        previous = None if grace_until is None else keys.c.digest
        return await self.update_key(
            key_id,
            {
                "digest": digest,
                "prefix": prefix,
                "previous_digest": previous,
                "previous_expires_at": grace_until,
                "updated_at": at,
            },
        )

    async def delete_key(self, key_id: str) -> bool:
        """Delete a key; whether it existed."""
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(keys).where(keys.c.id == key_id))
        return result.rowcount > 0

    async def memberships(self) -> list[Membership]:
        """Every stored key with its team (disabled and expired ones too)."""
        return await self._memberships(None)

    async def find(self, digest: bytes) -> Membership | None:
        """The key whose secret has this digest, or whose replaced secret has it and is still
        within its grace period."""
        in_grace = and_(
            keys.c.previous_digest == digest,
            keys.c.previous_expires_at > datetime.now(UTC),
        )
        found = await self._memberships(or_(keys.c.digest == digest, in_grace))
        return found[0] if found else None

    async def memberships_of(self, change: Change) -> list[Membership]:
        """The keys a change concerns as they are now: the key (none once deleted), or every key
        of the team."""
        column = keys.c.id if change.scope is Scope.KEY else keys.c.team_id
        return await self._memberships(column == change.id)

    async def _memberships(self, condition: ColumnElement[bool] | None) -> list[Membership]:
        query = with_teams().order_by(keys.c.id)
        if condition is not None:
            query = query.where(condition)
        async with self.engine.connect() as connection:
            return [membership_of(row) for row in await connection.execute(query)]

    async def has_limits(self) -> bool:
        """Whether any key or team sets a limit or a budget (disabled ones too)."""
        async with self.engine.connect() as connection:
            for table in (keys, teams):
                limited = or_(*(table.c[name].is_not(None) for name in COUNTED_COLUMNS))
                if await connection.scalar(select(exists().where(limited))):
                    return True
        return False

    async def touch(self, last_used: Mapping[str, datetime]) -> None:
        """Record when keys were last used, in one batch; a time never moves backwards."""
        if not last_used:
            return
        used_at = bindparam("used_at", type_=keys.c.last_used_at.type)
        statement = (
            update(keys)
            .where(keys.c.id == bindparam("key_id"))
            .where(or_(keys.c.last_used_at.is_(None), keys.c.last_used_at < used_at))
            .values(last_used_at=used_at)
        )
        # In id order, so replicas flushing overlapping keys lock rows in the same order.
        rows: Sequence[dict[str, Any]] = [
            {"key_id": key_id, "used_at": last_used[key_id]} for key_id in sorted(last_used)
        ]
        async with self.engine.begin() as connection:
            await connection.execute(statement, rows)


def team_has_keys(team_id: str) -> Conflict:
    """The 409 for deleting a team that still has keys."""
    return Conflict(
        f"Team {team_id} still has keys: delete them or move them to another team first."
    )
