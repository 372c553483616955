"""UsageReport: the usage ledger read back. Totals over a window grouped by key, team, model,
day, hour or status, and the entries themselves, newest first, a page at a time. SQLAlchemy
Core on SQLite and PostgreSQL alike; a day or hour is computed in UTC by each database."""

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from sqlalchemy import ColumnElement, Row, and_, case, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.errors import InvalidRequest
from ai_gateway.keys.payloads import validated
from ai_gateway.keys.tables import ID_LENGTH, NAME_LENGTH
from ai_gateway.usage.entry import INTERRUPTED
from ai_gateway.usage.ledger import REJECTED
from ai_gateway.usage.tables import ENTRY_ID_LENGTH, MODEL_LENGTH, STATUS_LENGTH, ledger

MAX_WINDOW: Final = timedelta(days=400)
MAX_HOURLY_WINDOW: Final = timedelta(days=31)
"""At most 745 hourly buckets in one answer."""
DEFAULT_SINCE: Final = "7d"
DEFAULT_GROUPS: Final = 100
MAX_GROUPS: Final = 1000
DEFAULT_RECORDS: Final = 100
MAX_RECORDS: Final = 1000
COST_DIGITS: Final = 10
RECORD_OBJECT: Final = "gateway.usage_record"
RELATIVE: Final = re.compile(r"(\d{1,6})([dhm])")
UNITS: Final = {"d": "days", "h": "hours", "m": "minutes"}
SINCE_FORMS: Final = "a duration such as 7d, 24h or 30m, or an ISO 8601 date or date-time"
# Constant SQL text (no caller input): the same literal in SELECT and GROUP BY, where bound
# parameters would differ and PostgreSQL would refuse the grouping.
POSTGRES_BUCKETS: Final = {"day": "'YYYY-MM-DD'", "hour": '\'YYYY-MM-DD"T"HH24:00"Z"\''}
SQLITE_BUCKETS: Final = {
    # SQLite keeps times as `2026-12-03 14:05:09.123456` (UTC): slicing the text is several
    # times cheaper than strftime() over every row.
    "day": "substr(created_at, 1, 10)",
    "hour": "substr(created_at, 1, 10) || 'T' || substr(created_at, 12, 2) || ':00Z'",
}
TIME_GROUPINGS: Final = frozenset({"day", "hour"})


class Grouping(StrEnum):
    """What the totals are grouped by."""

    KEY = "key"
    TEAM = "team"
    MODEL = "model"
    DAY = "day"
    HOUR = "hour"
    STATUS = "status"


GROUP_FIELDS: Final = {
    Grouping.KEY: ("key_id",),
    Grouping.TEAM: ("team",),
    Grouping.MODEL: ("provider", "model"),
    Grouping.DAY: ("day",),
    Grouping.HOUR: ("hour",),
    Grouping.STATUS: ("status", "error_code"),
}
"""The fields naming each group in the answer."""


class Outcome(StrEnum):
    """How a request ended, as a filter of the entries."""

    OK = "ok"
    ERROR = "error"
    REJECTED = "rejected"
    FAILED = "failed"
    """An error or a rejection."""


def window_start(value: object, *, now: datetime | None = None) -> datetime:
    """`7d`, `24h` or `30m` before now, or an ISO 8601 date or date-time (UTC when it names no
    offset); at most 400 days back."""
    if not isinstance(value, str):
        raise ValueError(f"must be {SINCE_FORMS}")
    now = now or datetime.now(UTC)
    text = value.strip()
    relative = RELATIVE.fullmatch(text)
    try:
        if relative:
            start = now - timedelta(**{UNITS[relative[2]]: int(relative[1])})
        else:
            start = datetime.fromisoformat(text)
            start = start if start.tzinfo else start.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"must be {SINCE_FORMS}") from None
    try:
        if now - start > MAX_WINDOW:
            raise ValueError(f"may reach back at most {MAX_WINDOW.days} days")
        return start.astimezone(UTC)
    except OverflowError:  # a time at the edge of what datetime holds
        raise ValueError(f"must be {SINCE_FORMS}") from None


Since = Annotated[datetime, BeforeValidator(window_start)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=NAME_LENGTH)]


class Query(BaseModel):
    """A query string's parameters ("20" is read as 20); unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class UsageQuery(Query):
    """`?by=&since=&limit=` of the totals."""

    by: Grouping = Grouping.DAY
    since: Since = DEFAULT_SINCE  # type: ignore[assignment]  # validated into a datetime
    limit: Annotated[int, Field(ge=1, le=MAX_GROUPS)] = DEFAULT_GROUPS


class RecordQuery(Query):
    """`?since=&limit=&after=` and the filters of the entries."""

    since: Since = DEFAULT_SINCE  # type: ignore[assignment]  # validated into a datetime
    limit: Annotated[int, Field(ge=1, le=MAX_RECORDS)] = DEFAULT_RECORDS
    after: Annotated[str, StringConstraints(min_length=1, max_length=ENTRY_ID_LENGTH)] | None = None
    key_id: Annotated[str, StringConstraints(min_length=1, max_length=ID_LENGTH)] | None = None
    team: Text | None = None
    model: Annotated[str, StringConstraints(min_length=1, max_length=MODEL_LENGTH)] | None = None
    status: Annotated[str, StringConstraints(min_length=1, max_length=STATUS_LENGTH)] | None = None
    outcome: Outcome | None = None


def usage_query(params: dict[str, str]) -> UsageQuery:
    """The totals' parameters, or a 400 naming the one at fault (an hourly grouping may span
    at most 31 days)."""
    query = validated(UsageQuery, params)
    if query.by is Grouping.HOUR and datetime.now(UTC) - query.since > MAX_HOURLY_WINDOW:
        raise InvalidRequest(
            f"Invalid 'since': by=hour may reach back at most {MAX_HOURLY_WINDOW.days} days.",
            param="since",
        )
    return query


def record_query(params: dict[str, str]) -> RecordQuery:
    """The entries' parameters, or a 400 naming the one at fault."""
    return validated(RecordQuery, params)


def count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """How many rows of the group meet the condition."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def total(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The column's sum over the group; 0 when every value is NULL."""
    return func.coalesce(func.sum(column), 0)


IS_REJECTED: Final = ledger.c.status == REJECTED
IS_ERROR: Final = and_(
    ledger.c.status != REJECTED,
    or_(ledger.c.http_status >= 400, ledger.c.status == INTERRUPTED),
)
IS_OK: Final = and_(ledger.c.status != REJECTED, ledger.c.http_status < 400)
IS_UNPRICED: Final = and_(
    ledger.c.cost_usd.is_(None),
    or_(ledger.c.prompt_tokens.is_not(None), ledger.c.completion_tokens.is_not(None)),
)
OUTCOMES: Final = {
    Outcome.OK: IS_OK,
    Outcome.ERROR: IS_ERROR,
    Outcome.REJECTED: IS_REJECTED,
    Outcome.FAILED: or_(IS_ERROR, IS_REJECTED),
}


def aggregates() -> list[ColumnElement[Any]]:
    """A group's figures: requests, errors (a status of 400 or more, or interrupted; limit
    rejections are counted apart), rejections, tokens, cost, requests of unknown price."""
    c = ledger.c
    return [
        func.count().label("requests"),
        count_where(IS_ERROR).label("errors"),
        count_where(IS_REJECTED).label("rejections"),
        total(c.prompt_tokens).label("prompt_tokens"),
        total(c.completion_tokens).label("completion_tokens"),
        total(c.cached_tokens).label("cached_tokens"),
        total(c.reasoning_tokens).label("reasoning_tokens"),
        total(c.cost_usd).label("cost_usd"),
        count_where(IS_UNPRICED).label("unpriced_requests"),
        func.avg(case((IS_REJECTED, None), else_=c.latency_ms)).label("avg_latency_ms"),
        func.count(case((IS_REJECTED, None), else_=c.latency_ms)).label("timed"),
    ]


SUMMED: Final = (
    "requests",
    "errors",
    "rejections",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_requests",
    "timed",
)


def combined(groups: Sequence[Row[Any]]) -> dict[str, Any]:
    """The figures of every group together, as one row of `aggregates()` would hold them."""
    values: dict[str, Any] = {name: sum(row._mapping[name] for row in groups) for name in SUMMED}
    timed = values["timed"]
    weighted = sum(
        row._mapping["avg_latency_ms"] * row._mapping["timed"]
        for row in groups
        if row._mapping["timed"]
    )
    values["avg_latency_ms"] = weighted / timed if timed else None
    return values


def bucket(dialect: str, grouping: Grouping) -> ColumnElement[str]:
    """The UTC day (`2026-12-03`) or hour (`2026-12-03T14:00Z`) of each entry, as text."""
    if dialect == "postgresql":
        pattern: ColumnElement[str] = literal_column(POSTGRES_BUCKETS[grouping])
        return func.to_char(func.timezone(literal_column("'UTC'"), ledger.c.created_at), pattern)
    return literal_column(SQLITE_BUCKETS[grouping])


def group_columns(dialect: str, grouping: Grouping) -> list[ColumnElement[Any]]:
    """The columns a grouping shows, labelled as the answer names them."""
    if grouping in TIME_GROUPINGS:
        return [bucket(dialect, grouping).label(grouping.value)]
    return [ledger.c[name].label(name) for name in GROUP_FIELDS[grouping]]


def ordering(grouping: Grouping, labels: list[ColumnElement[Any]]) -> list[ColumnElement[Any]]:
    """Time buckets in order; statuses most frequent first; keys, teams and models by cost,
    then requests, most first. Ties in the group's own order, none (NULL) last."""
    in_order: list[ColumnElement[Any]] = [label.asc().nulls_last() for label in labels]
    if grouping in TIME_GROUPINGS:
        return in_order
    if grouping is Grouping.STATUS:
        return [func.count().desc(), *in_order]
    return [total(ledger.c.cost_usd).desc(), func.count().desc(), *in_order]


def figures(values: Mapping[Any, Any]) -> dict[str, Any]:
    """A group's figures as plain JSON numbers."""
    prompt, completion = int(values["prompt_tokens"]), int(values["completion_tokens"])
    latency = values["avg_latency_ms"]
    return {
        "requests": int(values["requests"]),
        "errors": int(values["errors"]),
        "rejections": int(values["rejections"]),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": int(values["cached_tokens"]),
        "reasoning_tokens": int(values["reasoning_tokens"]),
        "cost_usd": round(float(values["cost_usd"]), COST_DIGITS),
        "unpriced_requests": int(values["unpriced_requests"]),
        "avg_latency_ms": None if latency is None else round(float(latency), 3),
    }


def unix(moment: datetime) -> int:
    """A time as whole unix seconds."""
    return int(moment.timestamp())


def iso(moment: datetime) -> str:
    """A time as ISO 8601 in UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_view(row: Row[Any]) -> dict[str, Any]:
    """One ledger entry as the API shows it."""
    values = {str(name): value for name, value in row._mapping.items()}  # plain str keys
    prompt, completion = values["prompt_tokens"], values["completion_tokens"]
    both = prompt is not None or completion is not None
    return {
        "id": values.pop("entry_id"),
        "object": RECORD_OBJECT,
        **values,
        "created_at": unix(values["created_at"]),
        "total_tokens": (prompt or 0) + (completion or 0) if both else None,
    }


class UsageReport:
    """Read-only queries over the usage ledger; every method is one short transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def summary(self, query: UsageQuery) -> dict[str, Any]:
        """Totals per group since `query.since`, and over the whole window: every time bucket,
        in order; other groups by cost then requests, most first, at most `query.limit`. The
        window's total is added up from the groups, or read apart when they were cut."""
        labels = group_columns(self.engine.dialect.name, query.by)
        window = ledger.c.created_at >= query.since
        grouped = (
            select(*labels, *aggregates())
            .where(window)
            .group_by(*labels)
            .order_by(*ordering(query.by, labels))
        )
        if query.by not in TIME_GROUPINGS:  # time buckets are bounded by the window
            grouped = grouped.limit(query.limit + 1)
        async with self.engine.connect() as connection:
            groups = (await connection.execute(grouped)).all()
            is_cut = query.by not in TIME_GROUPINGS and len(groups) > query.limit
            whole = (
                (await connection.execute(select(*aggregates()).where(window))).one()._mapping
                if is_cut
                else combined(groups)
            )
        names = [label.name for label in labels]
        return {
            "object": "list",
            "by": query.by.value,
            "since": iso(query.since),
            "data": [
                {name: row._mapping[name] for name in names} | figures(row._mapping)
                for row in (groups[: query.limit] if is_cut else groups)
            ],
            "has_more": is_cut,
            "total": figures(whole),
        }

    async def records(self, query: RecordQuery) -> dict[str, Any]:
        """Entries since `query.since`, newest first, after the cursor entry, filtered."""
        c = ledger.c
        statement = select(ledger).where(c.created_at >= query.since, *filters(query))
        async with self.engine.connect() as connection:
            if query.after is not None:
                cursor = (
                    await connection.execute(select(c.created_at).where(c.entry_id == query.after))
                ).scalar_one_or_none()
                if cursor is None:
                    raise InvalidRequest(
                        f"Invalid 'after': no usage record with id '{query.after}'.",
                        param="after",
                    )
                statement = statement.where(
                    or_(
                        c.created_at < cursor,
                        and_(c.created_at == cursor, c.entry_id < query.after),
                    )
                )
            statement = statement.order_by(c.created_at.desc(), c.entry_id.desc())
            rows = (await connection.execute(statement.limit(query.limit + 1))).all()
        page = [record_view(row) for row in rows[: query.limit]]
        has_more = len(rows) > query.limit
        return {
            "object": "list",
            "since": iso(query.since),
            "data": page,
            "has_more": has_more,
            "next_after": page[-1]["id"] if has_more else None,
        }


def filters(query: RecordQuery) -> Sequence[ColumnElement[bool]]:
    """The conditions the query's filters name."""
    c = ledger.c
    conditions: list[ColumnElement[bool]] = []
    for column, value in (
        (c.key_id, query.key_id),
        (c.team, query.team),
        (c.model, query.model),
        (c.status, query.status),
    ):
        if value is not None:
            conditions.append(column == value)
    if query.outcome is not None:
        conditions.append(OUTCOMES[query.outcome])
    return conditions
