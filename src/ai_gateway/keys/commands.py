"""`ai-gateway db|keys|teams ...`: the database migrated and keys and teams administered from a
terminal, over the same KeyAdmin as the admin API."""

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from ai_gateway.app import shared_redis
from ai_gateway.budgets.ledger_spend import LedgerSpend
from ai_gateway.config.settings import Settings, load_settings
from ai_gateway.db.engine import create_engine, database_url, failure_reason
from ai_gateway.db.migrations import ensure_schema, head, upgrade
from ai_gateway.errors import ConfigurationError, GatewayError
from ai_gateway.keys.admin import IssuedKey, KeyAdmin, Notify
from ai_gateway.keys.invalidation import publish
from ai_gateway.keys.payloads import (
    KeyCreate,
    KeyQuery,
    KeyRotate,
    KeyUpdate,
    PageQuery,
    TeamCreate,
    TeamUpdate,
    validated,
)
from ai_gateway.keys.records import Change
from ai_gateway.keys.sql import KeyRepository
from ai_gateway.keys.terminal import render
from ai_gateway.keys.views import (
    KEY_OBJECT,
    TEAM_OBJECT,
    deleted_view,
    key_view,
    page_view,
    team_view,
)
from ai_gateway.logs import configure_logging

COMMANDS: Final = ("db", "keys", "teams")
NONE_WORDS: Final = frozenset({"none", "null"})
LIMIT_OPTIONS: Final = (
    ("--rpm", "rpm_limit", "requests per minute"),
    ("--tpm", "tpm_limit", "tokens per minute"),
    ("--parallel", "max_parallel_requests", "requests in flight"),
)
PERIODS: Final = ("day", "week", "month", "total")
FLAGS: Final = {
    **{field: flag for flag, field, _ in LIMIT_OPTIONS},
    "budget_usd": "--budget-usd",
    "budget_period": "--budget-period",
    "expires_at": "--expires-at",
    "grace_period_s": "--grace-period",
}
"""The CLI's options whose names differ from the API's fields."""

View = dict[str, Any]
Model = TypeVar("Model", bound=BaseModel)


def limit_value(text: str) -> int | None:
    """`--rpm 60`, or `--rpm none` to clear a limit."""
    if text.strip().lower() in NONE_WORDS:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number or 'none'") from None


def budget_value(text: str) -> float | None:
    """`--budget-usd 25.50`, or `--budget-usd none` to remove the budget."""
    if text.strip().lower() in NONE_WORDS:
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an amount in USD or 'none'") from None


def optional_text(text: str) -> str | None:
    """`--expires-at 2030-01-01`, or `--expires-at none` to clear it."""
    return None if text.strip().lower() in NONE_WORDS else text


def model_list(text: str) -> list[str]:
    """`--models a,b`."""
    return [name.strip() for name in text.split(",") if name.strip()]


def json_value(text: str) -> object:
    """`--metadata '{"owner": "ci"}'`."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise argparse.ArgumentTypeError("is not valid JSON") from None


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """The three limits, the budget and metadata, shared by keys and teams."""
    for flag, field, meaning in LIMIT_OPTIONS:
        parser.add_argument(
            flag,
            dest=field,
            type=limit_value,
            default=argparse.SUPPRESS,
            metavar="N|none",
            help=meaning,
        )
    parser.add_argument(
        "--budget-usd",
        dest="budget_usd",
        type=budget_value,
        default=argparse.SUPPRESS,
        metavar="USD|none",
        help="spending cap per budget period (none removes it)",
    )
    parser.add_argument(
        "--budget-period",
        dest="budget_period",
        choices=PERIODS,
        default=argparse.SUPPRESS,
        help="what the budget covers, in UTC (default month)",
    )
    parser.add_argument(
        "--metadata", type=json_value, default=argparse.SUPPRESS, help="a JSON object"
    )


def add_key_options(parser: argparse.ArgumentParser, *, is_update: bool) -> None:
    """The options of `keys create` and `keys update`."""
    team = parser.add_mutually_exclusive_group()
    team.add_argument("--team", default=argparse.SUPPRESS, help="a team's id or name")
    models = parser.add_mutually_exclusive_group()
    models.add_argument(
        "--models", type=model_list, default=argparse.SUPPRESS, help="a,b (default: all)"
    )
    parser.add_argument(
        "--expires-at",
        dest="expires_at",
        type=optional_text,
        default=argparse.SUPPRESS,
        help="unix seconds or ISO 8601 (UTC if no offset); none = never",
    )
    add_limit_options(parser)
    if is_update:
        team.add_argument(
            "--no-team", dest="team", action="store_const", const=None, default=argparse.SUPPRESS
        )
        models.add_argument(
            "--all-models",
            dest="models",
            action="store_const",
            const=None,
            default=argparse.SUPPRESS,
        )
        add_update_options(parser)


def add_update_options(parser: argparse.ArgumentParser) -> None:
    """`--name` and `--enable`/`--disable` of an update."""
    parser.add_argument("--name", default=argparse.SUPPRESS)
    state = parser.add_mutually_exclusive_group()
    for flag, is_disabled in (("--enable", False), ("--disable", True)):
        state.add_argument(
            flag,
            dest="disabled",
            action="store_const",
            const=is_disabled,
            default=argparse.SUPPRESS,
        )


def add_page_options(parser: argparse.ArgumentParser) -> None:
    """`--limit` and `--after` of a list."""
    parser.add_argument("--limit", type=int, default=argparse.SUPPRESS, help="1-100 (20)")
    parser.add_argument("--after", default=argparse.SUPPRESS, help="the last id seen")


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `db`, `keys` and `teams` on the CLI's sub-commands."""
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON")
    db = commands.add_parser("db", help="the database (DATABASE_URL)")
    db_actions = db.add_subparsers(dest="action", required=True)
    db_actions.add_parser("upgrade", help="bring the schema up to date")
    add_key_commands(commands.add_parser("keys", help="virtual keys"), output)
    add_team_commands(commands.add_parser("teams", help="teams of keys"), output)


def add_key_commands(keys: argparse.ArgumentParser, output: argparse.ArgumentParser) -> None:
    """`ai-gateway keys create|list|show|update|disable|delete|rotate`."""
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=[output], help="a new key (shown once)")
    create.add_argument("name")
    add_key_options(create, is_update=False)
    listing = actions.add_parser("list", parents=[output], help="keys in creation order")
    listing.add_argument("--team", default=argparse.SUPPRESS, help="a team's id or name")
    add_page_options(listing)
    update = actions.add_parser("update", parents=[output], help="change a key")
    update.add_argument("id")
    add_key_options(update, is_update=True)
    rotate = actions.add_parser("rotate", parents=[output], help="a new secret (shown once)")
    rotate.add_argument("id")
    rotate.add_argument(
        "--grace-period",
        dest="grace_period_s",
        type=int,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="how long the old secret keeps working (default 0)",
    )
    for name in ("show", "disable", "delete"):
        actions.add_parser(name, parents=[output], help=f"{name} a key").add_argument("id")


def add_team_commands(teams: argparse.ArgumentParser, output: argparse.ArgumentParser) -> None:
    """`ai-gateway teams create|list|show|update|disable|delete`."""
    actions = teams.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=[output], help="a new team")
    create.add_argument("name")
    add_limit_options(create)
    add_page_options(actions.add_parser("list", parents=[output], help="teams"))
    update = actions.add_parser("update", parents=[output], help="change a team")
    update.add_argument("id")
    add_limit_options(update)
    add_update_options(update)
    for name in ("show", "disable", "delete"):
        actions.add_parser(name, parents=[output], help=f"{name} a team").add_argument("id")


def payload(model: type[Model], args: argparse.Namespace) -> Model:
    """The options given that are fields of `model`, validated as the API validates them."""
    given = vars(args)
    return validated(model, {name: given[name] for name in model.model_fields if name in given})


def issued(key: IssuedKey) -> View:
    """A key with its secret."""
    return key_view(key.record, secret=key.secret)


async def key_action(admin: KeyAdmin, args: argparse.Namespace) -> View:
    """One `keys` action."""
    match args.action:
        case "create":
            return issued(await admin.create_key(payload(KeyCreate, args)))
        case "list":
            return page_view(await admin.list_keys(payload(KeyQuery, args)), key_view)
        case "show":
            return key_view(await admin.key(args.id))
        case "update":
            return key_view(await admin.update_key(args.id, payload(KeyUpdate, args)))
        case "disable":
            return key_view(await admin.disable_key(args.id))
        case "rotate":
            return issued(await admin.rotate_key(args.id, payload(KeyRotate, args)))
    await admin.delete_key(args.id)
    return deleted_view(args.id, KEY_OBJECT)


async def team_action(admin: KeyAdmin, args: argparse.Namespace) -> View:
    """One `teams` action."""
    match args.action:
        case "create":
            return team_view(await admin.create_team(payload(TeamCreate, args)))
        case "list":
            return page_view(await admin.list_teams(payload(PageQuery, args)), team_view)
        case "show":
            return team_view(await admin.team(args.id))
        case "update":
            return team_view(await admin.update_team(args.id, payload(TeamUpdate, args)))
        case "disable":
            return team_view(await admin.disable_team(args.id))
    await admin.delete_team(args.id)
    return deleted_view(args.id, TEAM_OBJECT)


async def ignore(_: Change) -> None:
    """Announce nothing: without Redis, gateways see changes at their next refresh."""


@asynccontextmanager
async def announcer(settings: Settings) -> AsyncIterator[Notify]:
    """Changes announced on Redis when REDIS_URL is set; a failure is a warning (the change
    is committed, gateways see it within KEY_CACHE_REFRESH_S)."""
    client = shared_redis(settings)
    if client is None:
        yield ignore
        return
    from redis import RedisError  # loaded with the client

    async def announce(change: Change) -> None:
        try:
            await publish(client, settings.redis_prefix, change)
        except (RedisError, OSError):
            sys.stderr.write(
                "ai-gateway: warning: could not announce the change on Redis; gateways pick "
                "it up within KEY_CACHE_REFRESH_S.\n"
            )

    try:
        yield announce
    finally:
        await client.aclose()


async def execute(args: argparse.Namespace, settings: Settings) -> View | str:
    """Run one command against DATABASE_URL: its JSON view, or a line of text."""
    engine = create_engine(database_url(settings.database_url))
    try:
        if args.command == "db":
            await upgrade(engine)
            where = engine.url.render_as_string(hide_password=True)
            return f"Database {where}: schema at revision {head()}."
        await ensure_schema(engine)
        async with announcer(settings) as notify:
            spend = LedgerSpend(engine, soft_threshold=settings.budget_soft_threshold)
            admin = KeyAdmin(KeyRepository(engine), notify, spend)
            action = key_action if args.command == "keys" else team_action
            return await action(admin, args)
    finally:
        await engine.dispose()


def describe(error: GatewayError) -> str:
    """An error's message, naming the CLI's option where it differs from the API's field."""
    flag = FLAGS.get(error.param or "")
    return f"{error.message} ({flag})" if flag else error.message


def show(result: View | str, *, as_json: bool, is_team: bool) -> None:
    """The result on stdout: JSON, or a table; notes (the secret's, more pages) on stderr."""
    if isinstance(result, str):
        sys.stdout.write(result + "\n")
        return
    if as_json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(result, is_team=is_team) + "\n")
    if "key" in result:
        sys.stderr.write("Store the key now: it is not shown again.\n")
    if result.get("has_more"):
        sys.stderr.write(f"More: --after {result['last_id']}\n")


def run_command(args: argparse.Namespace) -> None:
    """`db`, `keys` or `teams`: a failure is one line on stderr and exit code 1 (a
    configuration error is left to the CLI's own handler: exit code 2)."""
    settings = load_settings()
    configure_logging("warning", settings.log_format)  # stdout is for the command's output
    try:
        result = asyncio.run(execute(args, settings))
    except ConfigurationError:
        raise
    except GatewayError as error:
        sys.stderr.write(f"ai-gateway: error: {describe(error)}\n")
        raise SystemExit(1) from None
    except (SQLAlchemyError, OSError) as error:
        reason = failure_reason(error)
        sys.stderr.write(f"ai-gateway: error: database: {reason}\n")
        raise SystemExit(1) from None
    show(result, as_json=getattr(args, "json", False), is_team=args.command == "teams")
