"""The usage ledger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The `usage_ledger` table and its indexes."""
    op.create_table(
        "usage_ledger",
        sa.Column("entry_id", sa.String(40), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("team", sa.String(200), nullable=True),
        sa.Column("route", sa.String(256), nullable=True),
        sa.Column("provider", sa.String(200), nullable=True),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("is_stream", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("cached_tokens", sa.Integer(), nullable=True),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("reserved_tokens", sa.Integer(), nullable=True),
        sa.Column("reserved_cost_usd", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("entry_id", name="pk_usage_ledger"),
    )
    op.create_index("ix_usage_ledger_created_at", "usage_ledger", ["created_at"])
    op.create_index("ix_usage_ledger_key_id_created_at", "usage_ledger", ["key_id", "created_at"])
    op.create_index("ix_usage_ledger_team_created_at", "usage_ledger", ["team", "created_at"])


def downgrade() -> None:
    """Drop the ledger."""
    op.drop_table("usage_ledger")
