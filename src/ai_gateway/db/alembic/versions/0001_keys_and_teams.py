"""Keys and teams.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def json_type() -> sa.types.TypeEngine[Any]:
    """JSON; JSONB on PostgreSQL."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def time_type() -> sa.DateTime:
    """A timezone-aware time (TIMESTAMP WITH TIME ZONE on PostgreSQL)."""
    return sa.DateTime(timezone=True)


def limits() -> list[sa.Column[int]]:
    """The three limits; NULL = no limit."""
    return [
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        sa.Column("max_parallel_requests", sa.Integer(), nullable=True),
    ]


def upgrade() -> None:
    """The `teams` and `keys` tables."""
    op.create_table(
        "teams",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        *limits(),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("metadata", json_type(), nullable=False),
        sa.Column("created_at", time_type(), nullable=False),
        sa.Column("updated_at", time_type(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_teams"),
        sa.UniqueConstraint("name", name="uq_teams_name"),
    )
    op.create_table(
        "keys",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=True),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("previous_digest", sa.LargeBinary(32), nullable=True),
        sa.Column("previous_expires_at", time_type(), nullable=True),
        sa.Column("models", json_type(), nullable=True),
        *limits(),
        sa.Column("expires_at", time_type(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("metadata", json_type(), nullable=False),
        sa.Column("created_at", time_type(), nullable=False),
        sa.Column("updated_at", time_type(), nullable=False),
        sa.Column("last_used_at", time_type(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_keys"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name="fk_keys_team_id_teams"),
        sa.UniqueConstraint("digest", name="uq_keys_digest"),
        sa.UniqueConstraint("previous_digest", name="uq_keys_previous_digest"),
    )
    op.create_index("ix_keys_team_id", "keys", ["team_id"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index("ix_keys_team_id", table_name="keys")
    op.drop_table("keys")
    op.drop_table("teams")
