"""`ai-gateway serve`: parse flags, build Settings, run the server."""

import argparse
import asyncio
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from typing import Any

import structlog
import uvicorn
from pydantic import SecretStr
from starlette.types import ASGIApp
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from ai_gateway import __version__
from ai_gateway.api.connection import server_options
from ai_gateway.app import create_app
from ai_gateway.collector import tune_collector
from ai_gateway.config import constants
from ai_gateway.config.loader import load_config
from ai_gateway.config.settings import (
    InvalidSettings,
    Settings,
    load_settings,
    process_environment,
)
from ai_gateway.db.engine import create_engine, database_url
from ai_gateway.db.migrations import ensure_schema
from ai_gateway.errors import ConfigurationError
from ai_gateway.keys.commands import COMMANDS as ADMIN_COMMANDS
from ai_gateway.keys.commands import add_commands, run_command
from ai_gateway.keys.sql import KeyRepository
from ai_gateway.logs import configure_logging
from ai_gateway.observability.workers import shared_metrics_directory
from ai_gateway.providers.registry import build_registry
from ai_gateway.routing.router import Router
from ai_gateway.routing.table import build_router, render_table
from ai_gateway.usage.commands import COMMAND as USAGE_COMMAND
from ai_gateway.usage.commands import add_usage_command, run_usage

log = structlog.get_logger(__name__)


def whole_number(text: str, *, low: int, high: int | None, what: str) -> int:
    """`text` as an integer from `low` to `high`, or argparse's usage error (exit code 2)."""
    error = argparse.ArgumentTypeError(f"'{text}' is not {what}")
    try:
        number = int(text)
    except ValueError:
        raise error from None
    if number < low or (high is not None and number > high):
        raise error
    return number


def port_number(text: str) -> int:
    """`--port`: a TCP port the server can listen on."""
    return whole_number(text, low=1, high=65535, what="a TCP port (1-65535)")


def worker_count(text: str) -> int:
    """`--workers`: how many server processes share the port."""
    return whole_number(text, low=1, high=None, what="a number of worker processes (1 or more)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="ai-gateway", description="OpenAI-compatible AI gateway")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default=constants.DEFAULT_HOST)
    serve.add_argument("--port", type=port_number, default=constants.DEFAULT_PORT)
    serve.add_argument("--workers", type=worker_count, default=1, help="worker processes")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--config", help="the config file (default: AI_GATEWAY_CONFIG)")
    check = commands.add_parser(
        "check-config", help="validate AI_GATEWAY_CONFIG and print the routing table"
    )
    check.add_argument("--config", help="the config file (default: AI_GATEWAY_CONFIG)")
    add_commands(commands)
    add_usage_command(commands)
    return parser.parse_args(argv)


def development_key(settings: Settings) -> str | None:
    """A generated gateway key when no key is set in development; None when keys are set
    (static keys, or admin keys to issue virtual keys with).

    Production without keys is a ConfigurationError: it never runs on a key nobody chose.
    """
    if settings.gateway_api_keys or settings.gateway_admin_keys:
        return None
    if settings.is_production:
        raise ConfigurationError(
            "GATEWAY_API_KEYS is not set. In production the gateway needs at least one key "
            "(comma-separated), or GATEWAY_ADMIN_KEYS to issue virtual keys, and will not "
            "generate one."
        )
    return constants.DEV_KEY_PREFIX + secrets.token_urlsafe(24)


def print_development_key(key: str) -> None:
    """Show the generated key: on stdout, apart from the logs on stderr."""
    sys.stdout.write(
        "\nNo GATEWAY_API_KEYS set: generated a development gateway key for this run:\n\n"
        f"    {key}\n\nSend it as 'Authorization: Bearer <key>'.\n\n"
    )
    sys.stdout.flush()


def serving_app(settings: Settings) -> ASGIApp:
    """The app a server process serves: built, then the collector tuned for serving."""
    app = create_app(settings)
    tune_collector()
    return app


def app_from_environment() -> ASGIApp:
    """The app for each worker process of a multi-worker server."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return serving_app(settings)


def serve_settings(args: argparse.Namespace) -> Settings:
    """The settings with the command line's overrides, logging configured from them."""
    settings = load_settings()
    if args.log_level:
        settings = settings.model_copy(update={"log_level": args.log_level})
    if args.config:
        settings = settings.model_copy(update={"ai_gateway_config": args.config})
    configure_logging(settings.log_level, settings.log_format)
    return settings


def server_config(settings: Settings, args: argparse.Namespace) -> uvicorn.Config:
    """uvicorn's configuration, the app built (one process) or the config file checked
    and the settings handed to the workers through the environment (several)."""
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_config": None,
        "access_log": False,
        **server_options(settings),
    }
    if args.workers == 1:
        return uvicorn.Config(serving_app(settings), **options)
    resolve_routing(settings)  # a bad config file stops here, not in every worker
    asyncio.run(prepare_shared_database(settings))
    keys = ",".join(key.get_secret_value() for key in settings.gateway_api_keys)
    os.environ["GATEWAY_API_KEYS"] = keys
    os.environ["AI_GATEWAY_WORKERS"] = str(args.workers)
    os.environ["LOG_LEVEL"] = settings.log_level
    if settings.ai_gateway_config:
        os.environ["AI_GATEWAY_CONFIG"] = settings.ai_gateway_config
    return uvicorn.Config(
        "ai_gateway.cli:app_from_environment", factory=True, workers=args.workers, **options
    )


async def prepare_shared_database(settings: Settings) -> None:
    """Before several workers start: the schema checked (SQLite's brought up to date here, once,
    not raced by every worker), and a refusal if stored keys have limits that the workers could
    only count each on its own (no REDIS_URL)."""
    engine = create_engine(database_url(settings.database_url))
    try:
        await ensure_schema(engine)
        if settings.redis_url is None and await KeyRepository(engine).has_limits():
            raise ConfigurationError(
                "--workers N with rate limits needs REDIS_URL: each worker would count limits "
                "on its own, multiplying them by N. Set REDIS_URL or run one worker."
            )
    finally:
        await engine.dispose()


def run_server(config: uvicorn.Config, sock: socket.socket) -> None:
    """Serve on the bound socket until stopped: in this process, or in `config.workers`."""
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
            return
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        if not server.started:
            raise SystemExit(STARTUP_FAILURE)  # the app's start-up failed; uvicorn logged why
    except KeyboardInterrupt:
        pass  # Ctrl+C after a clean shutdown: nothing more to say
    finally:
        sock.close()


def serve(args: argparse.Namespace) -> None:
    """Run uvicorn with one process, or `--workers N` processes sharing the settings.

    A generated development key is printed only once the app is built, the config file
    checked and the port bound, so a start-up that fails never shows a key.
    """
    settings = serve_settings(args)
    key = development_key(settings)
    if key is not None:
        settings = settings.model_copy(update={"gateway_api_keys": (SecretStr(key),)})
    with shared_metrics_directory(args.workers):  # several workers: one /metrics over them all
        config = server_config(settings, args)
        sock = config.bind_socket()  # a port in use exits here (code 3), before the key is shown
        if key is not None:
            print_development_key(key)
        run_server(config, sock)


def resolve_routing(settings: Settings) -> Router:
    """The config file read and every alias resolved, as the server would at start-up; the
    providers are closed again (nothing has connected yet)."""
    config = load_config(settings.ai_gateway_config)
    registry = build_registry(settings, config, process_environment())
    try:
        return build_router(config, registry, request_timeout_s=settings.request_timeout_s)
    finally:
        asyncio.run(registry.aclose())


def check_config(args: argparse.Namespace) -> None:
    """Load the settings and the config file, resolve every alias, print the routing table."""
    settings = load_settings()
    if args.config:
        settings = settings.model_copy(update={"ai_gateway_config": args.config})
    configure_logging("error", settings.log_format)
    router = resolve_routing(settings)
    source = settings.ai_gateway_config or "no config file (AI_GATEWAY_CONFIG unset)"
    sys.stdout.write(f"config: {source}: OK\n{render_table(router)}\n")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `ai-gateway` console script and `python -m ai_gateway`."""
    args = parse_args(argv)
    try:
        if args.command in ADMIN_COMMANDS:
            run_command(args)
        elif args.command == USAGE_COMMAND:
            run_usage(args)
        elif args.command == "check-config":
            check_config(args)
        else:
            serve(args)
    except ConfigurationError as exc:
        problems = exc.problems if isinstance(exc, InvalidSettings) else (str(exc),)
        sys.stderr.write("".join(f"ai-gateway: configuration error: {p}\n" for p in problems))
        raise SystemExit(2) from None
