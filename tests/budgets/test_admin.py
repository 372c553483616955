"""Budgets of keys and teams as administrators set them: the CLI's `--budget-usd` and
`--budget-period` (spend read from the ledger), the payloads' checks, the stored record and the
Caller a budgeted key stands for."""

import asyncio
import secrets
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert

from ai_gateway.budgets.period import period_start
from ai_gateway.errors import InvalidRequest
from ai_gateway.keys.caller import Budget, Limits, Period, Scope, Subject
from ai_gateway.keys.directory import caller_of
from ai_gateway.keys.payloads import KeyCreate, KeyUpdate, TeamCreate, validated
from ai_gateway.keys.records import KeyRecord, Membership, TeamRecord
from ai_gateway.keys.sql import KeyRepository
from ai_gateway.usage.tables import ledger
from tests.db.databases import opened
from tests.keys.test_commands import (
    DEFAULT_DATABASE,
    _uncached_logging,  # noqa: F401  # autouse: the CLI's logs as the real CLI writes them
    fail,
    fields,
    run,
    run_json,
)


def spend_in_ledger(key_id: str, usd: float) -> None:
    """A request of the key, settled at `usd`, written straight into the ledger table."""

    async def write() -> None:
        async with opened(DEFAULT_DATABASE) as engine, engine.begin() as connection:
            await connection.execute(
                insert(ledger),
                [
                    {
                        "entry_id": f"use_{secrets.token_hex(8)}",
                        "request_id": "req_1",
                        "created_at": datetime.now(UTC),
                        "key_id": key_id,
                        "status": "200",
                        "is_stream": False,
                        "cost_usd": usd,
                    }
                ],
            )

    asyncio.run(write())


def has_limits() -> bool:
    async def ask() -> bool:
        async with opened(DEFAULT_DATABASE) as engine:
            return await KeyRepository(engine).has_limits()

    return asyncio.run(ask())


def test_a_key_s_budget_is_set_shown_with_its_spend_and_removed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = run_json(capsys, "keys", "create", "ci", "--budget-usd", "5", "--budget-period", "day")
    spend_in_ledger(key["id"], 4.5)
    shown = run_json(capsys, "keys", "show", key["id"])
    table, _ = run(capsys, "keys", "show", key["id"])
    removed = run_json(capsys, "keys", "update", key["id"], "--budget-usd", "none")

    today = period_start(Period.DAY, datetime.now(UTC))
    assert today is not None
    assert key["budget"] == {
        "limit_usd": 5.0,
        "period": "day",
        "period_start": int(today.timestamp()),
        "spent_usd": 0.0,
        "soft_limit_reached": False,
    }
    assert (shown["budget"]["spent_usd"], shown["budget"]["soft_limit_reached"]) == (4.5, True)
    assert fields(table)["budget"] == "$4.50/$5 per day!"
    assert removed["budget"] is None


def test_a_team_budget_is_monthly_by_default_and_its_period_can_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    team = run_json(capsys, "teams", "create", "eng", "--budget-usd", "100")
    weekly = run_json(capsys, "teams", "update", team["id"], "--budget-period", "week")
    listed, _ = run(capsys, "teams", "list")

    assert (team["budget"]["period"], weekly["budget"]["period"]) == ("month", "week")
    assert weekly["budget"]["limit_usd"] == 100.0
    assert "$0.00/$100 per week" in listed.splitlines()[1]
    assert has_limits() is True


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (("--budget-usd", "ten"), 2, "'ten' is not an amount in USD or 'none'"),
        (("--budget-usd", "5", "--budget-period", "year"), 2, "invalid choice: 'year'"),
        (
            ("--budget-usd", "-1"),
            1,
            "Invalid 'budget_usd': input should be greater than 0. (--budget-usd)",
        ),
        (
            ("--budget-period", "day"),
            1,
            "Invalid 'budget_period': needs 'budget_usd' (the "
            "amount to spend per period). (--budget-period)",
        ),
    ],
)
def test_a_bad_budget_option_is_refused(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], code: int, message: str
) -> None:
    exit_code, err = fail(capsys, "keys", "create", "ci", *argv)

    assert exit_code == code
    assert message in err


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"budget_usd": "5"}, "budget_usd"),
        ({"budget_usd": True}, "budget_usd"),
        ({"budget_usd": 0}, "budget_usd"),
        ({"budget_usd": 1_000_001}, "budget_usd"),
        ({"budget_usd": 5, "budget_period": "hour"}, "budget_period"),
        ({"budget_period": "day"}, "budget_period"),
    ],
)
def test_a_bad_budget_in_a_body_is_a_400_naming_the_field(
    payload: dict[str, Any], param: str
) -> None:
    for model in (KeyCreate, TeamCreate):
        with pytest.raises(InvalidRequest) as caught:
            validated(model, {"name": "x", **payload})
        assert caught.value.param == param


def test_an_update_may_change_the_period_alone_but_never_null_it() -> None:
    assert validated(KeyUpdate, {"budget_period": "total"}).budget_period == "total"
    with pytest.raises(InvalidRequest, match="may not be null"):
        validated(KeyUpdate, {"budget_period": None})


def test_a_budgeted_key_and_team_stand_for_budgeted_subjects() -> None:
    team = TeamRecord("team_1", "eng", budget=Budget(50.0, Period.WEEK))
    key = KeyRecord("key_1", "ci", b"d" * 32, "sk-", team_id="team_1", budget=Budget(5.0))

    caller = caller_of(Membership(key, team))

    assert caller.subjects == (
        Subject(Scope.KEY, "key_1", Limits(), Budget(5.0, Period.MONTH)),
        Subject(Scope.TEAM, "team_1", Limits(), Budget(50.0, Period.WEEK)),
    )
    assert caller_of(Membership(KeyRecord("key_2", "x", b"e" * 32, "sk-"), None)).subjects == ()
