"""`ai-gateway serve`: parse flags, build Settings, run the server."""

import argparse
import asyncio
import os
import secrets
import sys
from collections.abc import Sequence

import structlog
import uvicorn
from pydantic import SecretStr, ValidationError
from starlette.types import ASGIApp

from ai_gateway import __version__
from ai_gateway.app import create_app
from ai_gateway.config import constants
from ai_gateway.config.loader import load_config
from ai_gateway.config.settings import Settings, process_environment
from ai_gateway.errors import ConfigurationError
from ai_gateway.logs import configure_logging
from ai_gateway.providers.registry import build_registry
from ai_gateway.routing.router import Router
from ai_gateway.routing.table import build_router, render_table

log = structlog.get_logger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="ai-gateway", description="OpenAI-compatible AI gateway")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default=constants.DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=constants.DEFAULT_PORT)
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--config", help="the config file (default: AI_GATEWAY_CONFIG)")
    check = commands.add_parser(
        "check-config", help="validate AI_GATEWAY_CONFIG and print the routing table"
    )
    check.add_argument("--config", help="the config file (default: AI_GATEWAY_CONFIG)")
    return parser.parse_args(argv)


def with_gateway_keys(settings: Settings) -> Settings:
    """Settings with gateway keys: in development a generated key, printed once; else exit."""
    if settings.gateway_api_keys:
        return settings
    if settings.is_production:
        raise ConfigurationError(
            "GATEWAY_API_KEYS is not set. In production the gateway needs at least one key "
            "(comma-separated) and will not generate one."
        )
    key = constants.DEV_KEY_PREFIX + secrets.token_urlsafe(24)
    sys.stdout.write(
        "\nNo GATEWAY_API_KEYS set: generated a development gateway key for this run:\n\n"
        f"    {key}\n\nSend it as 'Authorization: Bearer <key>'.\n\n"
    )
    sys.stdout.flush()
    return settings.model_copy(update={"gateway_api_keys": (SecretStr(key),)})


def app_from_environment() -> ASGIApp:
    """The app for each worker process of a multi-worker server."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def serve(args: argparse.Namespace) -> None:
    """Run uvicorn with one process, or `--workers N` processes sharing the settings."""
    settings = Settings()
    if args.log_level:
        settings = settings.model_copy(update={"log_level": args.log_level})
    if args.config:
        settings = settings.model_copy(update={"ai_gateway_config": args.config})
    configure_logging(settings.log_level, settings.log_format)
    settings = with_gateway_keys(settings)
    options = {"host": args.host, "port": args.port, "log_config": None, "access_log": False}
    if args.workers > 1:
        resolve_routing(settings)  # a bad config file stops here, not in every worker
        keys = ",".join(key.get_secret_value() for key in settings.gateway_api_keys)
        os.environ["GATEWAY_API_KEYS"] = keys
        os.environ["LOG_LEVEL"] = settings.log_level
        if settings.ai_gateway_config:
            os.environ["AI_GATEWAY_CONFIG"] = settings.ai_gateway_config
        uvicorn.run(
            "ai_gateway.cli:app_from_environment", factory=True, workers=args.workers, **options
        )
        return
    uvicorn.run(create_app(settings), **options)


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
    settings = Settings()
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
        check_config(args) if args.command == "check-config" else serve(args)
    except (ConfigurationError, ValidationError) as exc:
        sys.stderr.write(f"ai-gateway: configuration error: {exc}\n")
        raise SystemExit(2) from None
