"""`ai-gateway usage`: the usage ledger's totals over a window, per key, team, model, day,
hour or status, read from DATABASE_URL as the admin API reads them (`--json`: the same body as
`GET /admin/v1/usage`)."""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any, Final

import orjson
from sqlalchemy.exc import SQLAlchemyError

from ai_gateway.config.settings import Settings, load_settings
from ai_gateway.db.engine import create_engine, database_url, failure_reason
from ai_gateway.db.migrations import ensure_schema
from ai_gateway.errors import ConfigurationError, GatewayError
from ai_gateway.keys.terminal import aligned
from ai_gateway.logs import configure_logging
from ai_gateway.usage.report import (
    DEFAULT_SINCE,
    GROUP_FIELDS,
    Grouping,
    UsageReport,
    usage_query,
)

COMMAND: Final = "usage"
GROUP_TITLES: Final = {
    "key_id": "KEY",
    "team": "TEAM",
    "provider": "PROVIDER",
    "model": "MODEL",
    "day": "DAY (UTC)",
    "hour": "HOUR (UTC)",
    "status": "STATUS",
    "error_code": "CODE",
}
FIGURE_COLUMNS: Final = (
    ("REQUESTS", "requests"),
    ("ERRORS", "errors"),
    ("REJECTED", "rejections"),
    ("PROMPT", "prompt_tokens"),
    ("COMPLETION", "completion_tokens"),
    ("CACHED", "cached_tokens"),
    ("REASONING", "reasoning_tokens"),
    ("COST USD", "cost_usd"),
    ("UNPRICED", "unpriced_requests"),
)


def add_usage_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `usage` on the CLI's sub-commands."""
    usage = commands.add_parser(COMMAND, help="usage totals from the ledger (DATABASE_URL)")
    usage.add_argument(
        "--by",
        choices=[grouping.value for grouping in Grouping],
        default=Grouping.DAY.value,
        help="group the totals by (default: day)",
    )
    usage.add_argument(
        "--since",
        default=DEFAULT_SINCE,
        help=f"7d, 24h, 30m or an ISO 8601 date or time, at most 400 days back "
        f"(default: {DEFAULT_SINCE})",
    )
    usage.add_argument("--limit", default="100", help="most groups shown: 1-1000 (100)")
    usage.add_argument("--json", action="store_true", help="print JSON")


def cost_text(value: float) -> str:
    """USD with enough digits for a single cheap request."""
    return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"


def figure_cells(figures: dict[str, Any]) -> list[str]:
    """A group's figures as table cells."""
    return [
        cost_text(figures[field]) if field == "cost_usd" else str(figures[field])
        for _, field in FIGURE_COLUMNS
    ]


def render_summary(view: dict[str, Any]) -> str:
    """The totals as a table, one row per group, then the window's total."""
    groups = GROUP_FIELDS[Grouping(view["by"])]
    header = [GROUP_TITLES[field] for field in groups] + [title for title, _ in FIGURE_COLUMNS]
    rows: list[Sequence[str]] = [header]
    for row in view["data"]:
        named = ["-" if row[field] is None else str(row[field]) for field in groups]
        rows.append(named + figure_cells(row))
    rows.append(["TOTAL", *([""] * (len(groups) - 1)), *figure_cells(view["total"])])
    return aligned(rows)


async def summarise(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The totals the arguments ask for, from DATABASE_URL."""
    query = usage_query({"by": args.by, "since": args.since, "limit": args.limit})
    engine = create_engine(database_url(settings.database_url))
    try:
        await ensure_schema(engine)
        return await UsageReport(engine).summary(query)
    finally:
        await engine.dispose()


def run_usage(args: argparse.Namespace) -> None:
    """`ai-gateway usage`: the table (or JSON) on stdout; a failure is one line on stderr and
    exit code 1 (a configuration error is left to the CLI's own handler: exit code 2)."""
    settings = load_settings()
    configure_logging("warning", settings.log_format)  # stdout is for the command's output
    try:
        view = asyncio.run(summarise(args, settings))
    except ConfigurationError:
        raise
    except GatewayError as error:
        sys.stderr.write(f"ai-gateway: error: {error.message}\n")
        raise SystemExit(1) from None
    except (SQLAlchemyError, OSError) as error:
        sys.stderr.write(f"ai-gateway: error: database: {failure_reason(error)}\n")
        raise SystemExit(1) from None
    if args.json:
        sys.stdout.write(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    sys.stdout.write(render_summary(view) + "\n")
    if view["has_more"]:
        sys.stderr.write(f"More groups than shown: raise --limit (now {args.limit}).\n")
