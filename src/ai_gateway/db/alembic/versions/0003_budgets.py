"""Budgets of keys and teams.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 00:00:01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("teams", "keys")


def upgrade() -> None:
    """`budget_usd` and `budget_period` on keys and teams (NULL: no budget)."""
    for table in TABLES:
        op.add_column(table, sa.Column("budget_usd", sa.Float(), nullable=True))
        op.add_column(table, sa.Column("budget_period", sa.String(8), nullable=True))


def downgrade() -> None:
    """Drop the budget columns (a batch: SQLite rebuilds the table)."""
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("budget_period")
            batch.drop_column("budget_usd")
