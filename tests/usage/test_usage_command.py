"""`ai-gateway usage`: in-process through `cli.main`, on SQLite and PostgreSQL: the table, the
JSON (the admin API's body) and its refusals."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from ai_gateway.cli import main
from ai_gateway.db.migrations import upgrade
from ai_gateway.usage import commands
from tests.db.databases import KINDS, fresh_database, opened
from tests.usage.report_rows import insert_rows, known_rows


@pytest.fixture(autouse=True)
def _no_logging_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's logging set-up would reconfigure structlog for every later test."""
    monkeypatch.setattr(commands, "configure_logging", lambda level, fmt: None)


async def seeded(url: str) -> None:
    async with opened(url) as engine:
        await upgrade(engine)
        await insert_rows(engine, known_rows())


@pytest.fixture(params=KINDS)
def database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """DATABASE_URL naming a database of each kind that holds the known rows."""
    with asyncio.Runner() as runner:
        manager = fresh_database(request.param, tmp_path)
        url = runner.run(manager.__aenter__())
        try:
            runner.run(seeded(url))
            monkeypatch.setenv("DATABASE_URL", url)
            yield url
        finally:
            runner.run(manager.__aexit__(None, None, None))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    main(["usage", *argv])
    captured = capsys.readouterr()
    return captured.out, captured.err


def failure(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(["usage", *argv])
    code = exited.value.code
    return code if isinstance(code, int) else -1, capsys.readouterr().err


@pytest.mark.usefixtures("database")
def test_table_per_key(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = run(capsys, "--by", "key", "--since", "7d")

    lines = out.splitlines()
    assert lines[0].split() == [
        "KEY",
        "REQUESTS",
        "ERRORS",
        "REJECTED",
        "PROMPT",
        "COMPLETION",
        "CACHED",
        "REASONING",
        "COST",
        "USD",
        "UNPRICED",
    ]
    assert [line.split() for line in lines[1:]] == [
        ["key_a", "3", "1", "0", "15", "25", "2", "3", "0.0035", "0"],
        ["key_b", "2", "1", "1", "0", "0", "0", "0", "0", "0"],
        ["key_c", "1", "0", "0", "7", "8", "0", "0", "0", "1"],
        ["TOTAL", "6", "2", "1", "22", "33", "2", "3", "0.0035", "1"],
    ]
    assert err == ""


@pytest.mark.usefixtures("database")
def test_table_per_model_names_provider_and_model(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(capsys, "--by", "model", "--since", "30d")

    rows = [line.split()[:3] for line in out.splitlines()]
    assert rows[0] == ["PROVIDER", "MODEL", "REQUESTS"]
    assert rows[1] == ["cerebras", "gpt-oss-120b", "4"]
    assert rows[-2] == ["-", "-", "1"]
    assert rows[-1][:2] == ["TOTAL", "7"]


@pytest.mark.usefixtures("database")
def test_json_is_the_admin_api_body(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(capsys, "--by", "team", "--json")

    body: dict[str, Any] = orjson.loads(out)
    assert body["object"] == "list"
    assert body["by"] == "team"
    assert [(row["team"], row["requests"]) for row in body["data"]] == [
        ("team_x", 3),
        (None, 2),
        ("team_y", 1),
    ]
    assert body["total"]["cost_usd"] == 0.0035


@pytest.mark.usefixtures("database")
def test_a_cut_list_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = run(capsys, "--by", "key", "--limit", "1")

    assert [line.split()[0] for line in out.splitlines()] == ["KEY", "key_a", "TOTAL"]
    assert err == "More groups than shown: raise --limit (now 1).\n"


@pytest.mark.usefixtures("database")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--since", "1y"],
            "ai-gateway: error: Invalid 'since': must be a duration such as 7d, 24h or 30m, "
            "or an ISO 8601 date or date-time.\n",
        ),
        (
            ["--since", "999d"],
            "ai-gateway: error: Invalid 'since': may reach back at most 400 days.\n",
        ),
        (
            ["--limit", "0"],
            "ai-gateway: error: Invalid 'limit': input should be greater than or equal to 1.\n",
        ),
    ],
)
def test_bad_values_are_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert failure(capsys, *argv) == (1, message)


def test_an_unknown_grouping_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = failure(capsys, "--by", "user")

    assert code == 2
    assert "invalid choice: 'user'" in err


def test_an_unreachable_database_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:s3cret@127.0.0.1:9/none")

    code, err = failure(capsys)

    assert code == 2
    assert err.startswith("ai-gateway: configuration error: Cannot open the database ")
    assert "s3cret" not in err
    assert err.count("\n") == 1


def test_a_failing_query_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"

    async def without_ledger() -> None:
        async with opened(url) as engine:
            await upgrade(engine)
            async with engine.begin() as connection:
                await connection.execute(text("DROP TABLE usage_ledger"))

    asyncio.run(without_ledger())
    monkeypatch.setenv("DATABASE_URL", url)

    assert failure(capsys) == (1, "ai-gateway: error: database: no such table: usage_ledger\n")
