"""What a budget counter starts from: the usage ledger's rows summed per key or team since the
period's start, on SQLite and on the machine's PostgreSQL (rows written directly)."""

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.budgets.ledger_spend import LedgerSpend
from ai_gateway.budgets.period import period_start
from ai_gateway.db.migrations import upgrade
from ai_gateway.keys.caller import Budget, Limits, Period, Scope, Subject
from ai_gateway.usage.tables import ledger
from tests.db.databases import KINDS, fresh_database, opened

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)
KEY = Subject(Scope.KEY, "key_a", Limits(), Budget(1.0, Period.DAY))
TEAM = Subject(Scope.TEAM, "team_a", Limits(), Budget(1.0, Period.MONTH))


@pytest.fixture(params=KINDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with fresh_database(request.param, tmp_path) as url, opened(url) as made:
        await upgrade(made)
        yield made


def row(**overrides: Any) -> dict[str, Any]:
    """A ledger row of key_a in team_a, now, answered 200 at $0.10."""
    return {
        "entry_id": f"use_{secrets.token_hex(8)}",
        "request_id": "req_1",
        "created_at": NOW,
        "key_id": "key_a",
        "team": "team_a",
        "status": "200",
        "http_status": 200,
        "is_stream": False,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_usd": 0.10,
        "reserved_cost_usd": 0.50,
        **overrides,
    }


async def write(engine: AsyncEngine, *rows: dict[str, Any]) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(ledger), list(rows))


async def test_a_key_s_spend_is_its_rows_costs_since_the_start(engine: AsyncEngine) -> None:
    start = period_start(Period.DAY, NOW)
    assert start is not None
    await write(
        engine,
        row(),
        row(cost_usd=0.25),
        row(key_id="key_b", cost_usd=5.0),
        row(created_at=start - timedelta(microseconds=1), cost_usd=7.0),
    )
    spend = LedgerSpend(engine, soft_threshold=0.8)

    assert await spend.spent_since(KEY, start) == 350_000_000
    assert await spend.spent_since(KEY, None) == 7_350_000_000


async def test_a_team_s_spend_is_every_key_s_rows_of_the_team(engine: AsyncEngine) -> None:
    await write(engine, row(), row(key_id="key_b", cost_usd=0.5), row(team=None, cost_usd=9.0))

    assert await LedgerSpend(engine, soft_threshold=0.8).spent_since(TEAM, None) == 600_000_000


@pytest.mark.parametrize(
    ("overrides", "charged"),
    [
        ({"status": "200", "cost_usd": None, "prompt_tokens": None}, 0.5),
        ({"status": "499", "http_status": 499, "cost_usd": None, "prompt_tokens": None}, 0.5),
        ({"status": "interrupted", "http_status": None, "cost_usd": 0.5}, 0.5),
        ({"status": "interrupted", "http_status": None, "cost_usd": None}, 0.5),
        ({"status": "502", "http_status": 502, "cost_usd": None, "prompt_tokens": None}, 0.0),
        (
            {
                "status": "rejected",
                "http_status": 429,
                "cost_usd": None,
                "prompt_tokens": None,
                "reserved_cost_usd": None,
            },
            0.0,
        ),
        ({"status": "200", "cost_usd": None, "reserved_cost_usd": None}, 0.0),
    ],
)
async def test_rows_without_a_cost_charge_their_reservation_only_when_work_may_have_been_done(
    engine: AsyncEngine, overrides: dict[str, Any], charged: float
) -> None:
    await write(engine, row(**overrides))

    spent = await LedgerSpend(engine, soft_threshold=0.8).spent_since(KEY, None)

    assert spent == round(charged * 1_000_000_000)


async def test_the_cli_view_shows_the_period_and_the_soft_limit(engine: AsyncEngine) -> None:
    await write(engine, row(cost_usd=0.85))

    shown = await LedgerSpend(engine, soft_threshold=0.8).spend(KEY)

    assert (shown.period_start, shown.spent_usd) == (period_start(Period.DAY, NOW), 0.85)
    assert shown.soft_limit_reached is True
