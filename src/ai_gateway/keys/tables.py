"""The stored keys and teams: one MetaData with the `teams` and `keys` tables."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB

NAME_LENGTH = 200
ID_LENGTH = 64
DIGEST_LENGTH = 32
PERIOD_LENGTH = 8


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC time on every backend (SQLite keeps no offset: UTC is implied)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Stored in UTC; a naive time is refused rather than guessed."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: times are stored timezone-aware")
        utc = value.astimezone(UTC)
        # SQLite compares times as text: one format, no offset, so the order is the time order.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read back as UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> Any:
    """JSON (JSONB on PostgreSQL); None is SQL NULL, not the JSON `null`."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def limit_columns() -> list[Column[Any]]:
    """The three limits a key or a team may set; NULL = no limit."""
    return [
        Column("rpm_limit", Integer, nullable=True),
        Column("tpm_limit", Integer, nullable=True),
        Column("max_parallel_requests", Integer, nullable=True),
    ]


def budget_columns() -> list[Column[Any]]:
    """A key's or a team's budget: USD per `day`, `week`, `month` or in `total`; NULL = none."""
    return [
        Column("budget_usd", Float, nullable=True),
        Column("budget_period", String(PERIOD_LENGTH), nullable=True),
    ]


def common_columns() -> list[Column[Any]]:
    """What keys and teams both keep besides their limits."""
    return [
        Column("disabled", Boolean, nullable=False, default=False),
        Column("metadata", json_type(), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
    ]


# Named constraints and indexes: the migrations name them the same way, on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

teams = Table(
    "teams",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False, unique=True),
    *limit_columns(),
    *budget_columns(),
    *common_columns(),
)

keys = Table(
    "keys",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False),
    Column("team_id", String(ID_LENGTH), ForeignKey("teams.id"), nullable=True, index=True),
    Column("digest", LargeBinary(DIGEST_LENGTH), nullable=False, unique=True),
    Column("prefix", String(32), nullable=False),
    Column("previous_digest", LargeBinary(DIGEST_LENGTH), nullable=True, unique=True),
    Column("previous_expires_at", UtcDateTime, nullable=True),
    Column("models", json_type(), nullable=True),
    *limit_columns(),
    *budget_columns(),
    Column("expires_at", UtcDateTime, nullable=True),
    *common_columns(),
    Column("last_used_at", UtcDateTime, nullable=True),
)
