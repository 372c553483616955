"""`ai-gateway db|keys|teams`: in-process through `cli.main` (tables and `--json`), and once as
a real process."""

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import structlog
from anyio.from_thread import start_blocking_portal

from ai_gateway.cli import main
from ai_gateway.db.migrations import head
from ai_gateway.keys import commands
from ai_gateway.keys.caller import Scope
from ai_gateway.keys.invalidation import channel, parse
from ai_gateway.keys.records import Change, Membership
from ai_gateway.keys.secret import digest
from ai_gateway.keys.sql import KeyRepository
from tests.db.databases import opened
from tests.keys.conftest import FUTURE_YEAR
from tests.services import REDIS_URL, postgres_database, redis_prefix

DEFAULT_DATABASE = "sqlite:///ai-gateway.db"


@pytest.fixture(autouse=True)
def _uncached_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The commands' logs go to stderr as in the real CLI, without the server's logger caching,
    which would keep later tests' `capture_logs` from seeing module loggers; the previous
    configuration comes back afterwards."""
    saved = structlog.get_config()

    def configure(level: str, fmt: str) -> None:
        structlog.configure(
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            wrapper_class=structlog.make_filtering_bound_logger(
                logging.getLevelName(level.upper())
            ),
        )

    monkeypatch.setattr(commands, "configure_logging", configure)
    yield
    structlog.configure(**saved)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    """stdout and stderr of a command that succeeds."""
    main(list(argv))
    captured = capsys.readouterr()
    return captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    return orjson.loads(run(capsys, *argv, "--json")[0])


def fail(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and stderr of a command that fails (nothing on stdout)."""
    with pytest.raises(SystemExit) as caught:
        main(list(argv))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert isinstance(caught.value.code, int)
    return caught.value.code, captured.err


def fields(table: str) -> dict[str, str]:
    """A field/value table as a dict."""
    pairs = (line.split(maxsplit=1) for line in table.splitlines())
    return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}


def find(url: str, secret: str) -> Membership | None:
    """The stored key a secret opens, read straight from the database."""

    async def look_up() -> Membership | None:
        async with opened(url) as engine:
            return await KeyRepository(engine).find(digest(secret))

    return asyncio.run(look_up())


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for a test outside an event loop."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(postgres_database()) as url,
    ):
        yield url


def test_db_upgrade_migrates_the_default_sqlite_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out, err = run(capsys, "db", "upgrade")

    assert out == f"Database sqlite+aiosqlite:///ai-gateway.db: schema at revision {head()}.\n"
    assert err == ""
    assert (tmp_path / "ai-gateway.db").is_file()


def test_a_new_key_is_printed_once_with_its_secret(capsys: pytest.CaptureFixture[str]) -> None:
    team = run_json(capsys, "teams", "create", "eng", "--tpm", "1000")

    out, err = run(
        capsys,
        *("keys", "create", "ci bot", "--team", "eng", "--models", "a, b"),
        *("--rpm", "5", "--expires-at", f"{FUTURE_YEAR}-01-02", "--metadata", '{"owner": "ci"}'),
    )
    shown = fields(out)
    secret = shown.pop("key")

    assert shown == {
        "id": shown["id"],
        "object": "gateway.key",
        "name": "ci bot",
        "team": team["id"],
        "key_prefix": secret[:12],
        "models": "a,b",
        "rpm_limit": "5",
        "tpm_limit": "-",
        "max_parallel_requests": "-",
        "budget": "-",
        "expires_at": f"{FUTURE_YEAR}-01-02T00:00:00Z",
        "disabled": "no",
        "metadata": '{"owner":"ci"}',
        "created_at": shown["created_at"],
        "updated_at": shown["created_at"],
        "last_used_at": "-",
    }
    assert err == "Store the key now: it is not shown again.\n"
    found = find(DEFAULT_DATABASE, secret)
    assert found is not None
    assert found.key.id == shown["id"]
    assert secret not in run(capsys, "keys", "show", shown["id"])[0]


def test_keys_list_as_an_aligned_table(capsys: pytest.CaptureFixture[str]) -> None:
    key = run_json(capsys, "keys", "create", "ci", "--parallel", "2")

    out, _ = run(capsys, "keys", "list")

    header, row = out.splitlines()
    assert header.split("  ")[0].rstrip() == "ID".ljust(len(key["id"])).rstrip()
    assert header.split() == [
        *("ID", "NAME", "TEAM", "PREFIX", "MODELS", "RPM", "TPM", "PARALLEL"),
        *("BUDGET", "EXPIRES", "DISABLED", "LAST", "USED"),
    ]
    assert row.split() == [
        *(key["id"], "ci", "-", key["key_prefix"], "all", "-", "-", "2"),
        *("-", "-", "no", "-"),
    ]
    assert header.index("NAME") == row.index("ci")


def test_json_output_is_the_apis_json(capsys: pytest.CaptureFixture[str]) -> None:
    created = run_json(capsys, "keys", "create", "ci")
    listed = run_json(capsys, "keys", "list", "--limit", "1")

    assert created["object"] == "gateway.key"
    assert listed == {
        "object": "list",
        "data": [{k: v for k, v in created.items() if k != "key"}],
        "first_id": created["id"],
        "last_id": created["id"],
        "has_more": False,
    }


def test_keys_are_paged(capsys: pytest.CaptureFixture[str]) -> None:
    first = run_json(capsys, "keys", "create", "a")["id"]
    second = run_json(capsys, "keys", "create", "b")["id"]

    out, err = run(capsys, "keys", "list", "--limit", "1")
    rest = run_json(capsys, "keys", "list", "--after", first)
    run(capsys, "teams", "create", "eng")
    third = run_json(capsys, "keys", "create", "c", "--team", "eng")["id"]
    of_team = run_json(capsys, "keys", "list", "--team", "eng")

    assert out.splitlines()[1].startswith(first)
    assert err == f"More: --after {first}\n"
    assert [key["id"] for key in rest["data"]] == [second]
    assert [key["id"] for key in of_team["data"]] == [third]


def test_an_update_sets_and_clears_fields(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "teams", "create", "eng")
    key = run_json(capsys, "keys", "create", "ci", "--team", "eng", "--models", "a", "--rpm", "5")

    updated = run_json(
        capsys,
        *("keys", "update", key["id"], "--name", "renamed", "--no-team", "--all-models"),
        *("--rpm", "none", "--tpm", "9", "--disable"),
    )
    enabled = run_json(capsys, "keys", "update", key["id"], "--enable")

    assert {k: updated[k] for k in ("name", "team", "models", "rpm_limit", "tpm_limit")} == {
        "name": "renamed",
        "team": None,
        "models": None,
        "rpm_limit": None,
        "tpm_limit": 9,
    }
    assert (updated["disabled"], enabled["disabled"]) == (True, False)


def test_rotate_prints_the_new_secret_and_keeps_the_old_for_the_grace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = run_json(capsys, "keys", "create", "ci")

    new = run_json(capsys, "keys", "rotate", old["id"], "--grace-period", "60")

    assert new["key"] != old["key"]
    assert new["key_prefix"] == new["key"][:12]
    assert find(DEFAULT_DATABASE, old["key"]) is not None
    assert find(DEFAULT_DATABASE, new["key"]) is not None


def test_keys_are_disabled_and_deleted(capsys: pytest.CaptureFixture[str]) -> None:
    key = run_json(capsys, "keys", "create", "ci")

    disabled = run_json(capsys, "keys", "disable", key["id"])
    out, _ = run(capsys, "keys", "delete", key["id"])

    assert disabled["disabled"] is True
    assert out == f"Deleted key {key['id']}.\n"
    assert find(DEFAULT_DATABASE, key["key"]) is None


def test_teams_are_administered(capsys: pytest.CaptureFixture[str]) -> None:
    team = run_json(capsys, "teams", "create", "eng", "--rpm", "10", "--metadata", '{"o": 1}')
    key = run_json(capsys, "keys", "create", "ci", "--team", team["id"])

    updated = run_json(capsys, "teams", "update", team["id"], "--name", "platform", "--rpm", "none")
    disabled = run_json(capsys, "teams", "disable", team["id"])
    listed, _ = run(capsys, "teams", "list")
    code, err = fail(capsys, "teams", "delete", team["id"])
    run(capsys, "keys", "delete", key["id"])
    deleted = run_json(capsys, "teams", "delete", team["id"])

    assert (updated["name"], updated["rpm_limit"], updated["metadata"]) == (
        "platform",
        None,
        {"o": 1},
    )
    assert disabled["disabled"] is True
    assert listed.splitlines()[0].split() == [
        *("ID", "NAME", "RPM", "TPM", "PARALLEL", "BUDGET", "DISABLED", "CREATED")
    ]
    assert listed.splitlines()[1].split()[:7] == [team["id"], "platform", "-", "-", "-", "-", "yes"]
    assert (code, err) == (
        1,
        f"ai-gateway: error: Team {team['id']} still has keys: delete them or move them to "
        "another team first.\n",
    )
    assert deleted == {"id": team["id"], "object": "gateway.team", "deleted": True}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keys", "show", "key_nope"], "No key with id 'key_nope'."),
        (["teams", "disable", "team_nope"], "No team with id 'team_nope'."),
        (["keys", "create", "ci", "--team", "ghosts"], "No team with id or name 'ghosts'."),
        (
            ["keys", "create", "ci", "--rpm", "0"],
            "Invalid 'rpm_limit': input should be greater than 0. (--rpm)",
        ),
        (
            ["keys", "create", "ci", "--expires-at", "2001-01-01"],
            "Invalid 'expires_at': must be in the future. (--expires-at)",
        ),
        (
            ["keys", "create", "ci", "--metadata", "[1]"],
            "Invalid 'metadata': input should be a valid dictionary.",
        ),
        (
            ["keys", "list", "--limit", "0"],
            "Invalid 'limit': input should be greater than or equal to 1.",
        ),
    ],
)
def test_a_failure_is_one_line_on_stderr_and_exit_code_1(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert fail(capsys, *argv) == (1, f"ai-gateway: error: {message}\n")


def test_a_postgresql_behind_asks_for_db_upgrade(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres_url)

    code, err = fail(capsys, "keys", "list")
    out, _ = run(capsys, "db", "upgrade")
    listed = run_json(capsys, "keys", "list")

    assert (code, err) == (
        2,
        "ai-gateway: configuration error: The database schema is behind (revision none, this "
        f"gateway needs {head()}): run `ai-gateway db upgrade` with the same DATABASE_URL, then "
        "start the gateway.\n",
    )
    assert out.startswith("Database postgresql+asyncpg://postgres@127.0.0.1:5432/gw_test_db_")
    assert listed["data"] == []


def test_changes_are_announced_on_redis(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    with redis_prefix() as prefix, client.pubsub(ignore_subscribe_messages=True) as pubsub:
        monkeypatch.setenv("REDIS_URL", REDIS_URL)
        monkeypatch.setenv("REDIS_PREFIX", prefix)
        pubsub.subscribe(channel(prefix))
        pubsub.get_message(timeout=1.0)  # the subscription's confirmation

        key = run_json(capsys, "keys", "create", "ci")
        message = pubsub.get_message(timeout=2.0)
    client.close()

    assert message is not None
    assert parse(message["data"]) == Change(Scope.KEY, key["id"])


def test_an_unreachable_redis_is_a_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")

    out, err = run(capsys, "keys", "create", "ci", "--json")

    assert orjson.loads(out)["name"] == "ci"
    assert err == (
        "ai-gateway: warning: could not announce the change on Redis; gateways pick it up "
        "within KEY_CACHE_REFRESH_S.\n"
        "Store the key now: it is not shown again.\n"
    )


def test_the_installed_command_creates_a_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    command = Path(sys.executable).with_name("ai-gateway")
    environment = {**os.environ, "DATABASE_URL": url}

    done = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [command, "keys", "create", "ci", "--json"],
        capture_output=True,
        env=environment,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    created = orjson.loads(done.stdout)
    assert done.stderr == b"Store the key now: it is not shown again.\n"
    found = find(url, created["key"])
    assert found is not None
    assert found.key.id == created["id"]
