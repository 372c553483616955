"""create_app(): the composition root, the only place the gateway's objects are wired together."""

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ai_gateway.api.admin import AdminApi
from ai_gateway.api.dispatch import Gateway
from ai_gateway.api.openapi import build_document
from ai_gateway.api.routes import Endpoints, Routes
from ai_gateway.budgets.gate import budget_gate
from ai_gateway.config.constants import USAGE_JOURNAL_SEGMENT_BYTES
from ai_gateway.config.file import GatewayConfig
from ai_gateway.config.loader import load_config
from ai_gateway.config.settings import FailMode, Settings, process_environment
from ai_gateway.db.engine import create_engine, database_url
from ai_gateway.errors import ConfigurationError
from ai_gateway.keys.admin import KeyAdmin
from ai_gateway.keys.directory import KeyDirectory
from ai_gateway.keys.sql import KeyRepository
from ai_gateway.keys.static import KeyStore
from ai_gateway.limits.admission import Admission
from ai_gateway.limits.limiter import Limiter
from ai_gateway.limits.memory import MemoryLimiter
from ai_gateway.limits.unshared import UnsharedLimiter
from ai_gateway.observability.setup import build_observability
from ai_gateway.providers.registry import Registry, build_registry
from ai_gateway.routing.table import build_router
from ai_gateway.runtime import Runtime
from ai_gateway.ui.page import page_routes
from ai_gateway.usage.journal import Journal
from ai_gateway.usage.ledger import Ledger
from ai_gateway.usage.prices import price_table
from ai_gateway.usage.report import UsageReport
from ai_gateway.usage.shipper import Shipper
from ai_gateway.usage.writer import LedgerWriter

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["create_app"]


def shared_redis(settings: Settings) -> "redis.asyncio.Redis | None":
    """The shared Redis client (limits, key change announcements), when REDIS_URL is set; every
    command bounded by REDIS_TIMEOUT_S, never retried (a retried admission could count twice)."""
    if settings.redis_url is None:
        return None
    from ai_gateway.limits.redis_store import redis_client  # redis-py only when it is used

    try:
        return redis_client(
            settings.redis_url.get_secret_value(), timeout_s=settings.redis_timeout_s
        )
    except ValueError:  # its message may quote part of the URL: the password stays out
        raise ConfigurationError(
            "REDIS_URL is not a Redis URL: use redis://[:<password>@]<host>:<port>/<db> "
            "(rediss:// for TLS)."
        ) from None


def build_limiter(settings: Settings, client: "redis.asyncio.Redis | None") -> Limiter:
    """Redis when several processes share limits; memory for one; a refusal for several
    without Redis (see limits/unshared.py)."""
    if client is not None:
        from ai_gateway.limits.redis_store import RedisLimiter  # only with a client

        return RedisLimiter(
            client,
            prefix=settings.redis_prefix,
            fail_open=settings.limits_fail_mode is FailMode.OPEN,
        )
    if settings.ai_gateway_workers > 1:
        return UnsharedLimiter()
    return MemoryLimiter()


def build_journal(settings: Settings) -> Journal:
    """This process's usage journal."""
    return Journal(
        settings.usage_journal_dir,
        fsync=settings.usage_journal_fsync,
        segment_bytes=USAGE_JOURNAL_SEGMENT_BYTES,
        max_bytes=settings.usage_journal_max_bytes,
    )


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    config: GatewayConfig | None = None,
    environ: Mapping[str, str] | None = None,
) -> Gateway:
    """The ASGI app; pass `registry` to serve fakes instead of the configured providers, and
    `config` instead of reading the file `AI_GATEWAY_CONFIG` names.

    Everything is built and checked here, before the server listens: a bad config file fails
    here. Connections (database, Redis) open in the app's start-up; the app closes what it
    built when the server shuts down.
    """
    static_keys = [key.get_secret_value() for key in settings.gateway_api_keys]
    admin_keys = KeyStore.from_secrets(settings.gateway_admin_keys)
    if not any(static_keys) and not admin_keys:
        raise ConfigurationError(
            "GATEWAY_API_KEYS is empty: set at least one gateway key, or GATEWAY_ADMIN_KEYS to "
            "issue virtual keys through the admin API."
        )
    config = config or load_config(settings.ai_gateway_config)
    owns_registry = registry is None
    registry = registry or build_registry(
        settings, config, process_environment() if environ is None else environ
    )
    router = build_router(config, registry, request_timeout_s=settings.request_timeout_s)
    url = database_url(settings.database_url)
    engine = create_engine(url)
    repository = KeyRepository(engine)
    directory = KeyDirectory(
        (key for key in static_keys if key), repository, negative_ttl_s=settings.key_negative_ttl_s
    )
    client = shared_redis(settings)
    journal = build_journal(settings)
    prices = price_table(config)
    ledger = Ledger(
        journal if settings.usage_ledger else None,
        prices=prices,
        default_completion_tokens=settings.default_completion_tokens,
    )
    writer = LedgerWriter.for_url(
        url, engine, log_level=settings.log_level, log_format=settings.log_format
    )
    shipper = Shipper(journal, writer, interval_s=settings.usage_ship_interval_s)
    admission = Admission(
        build_limiter(settings, client),
        default_completion_tokens=settings.default_completion_tokens,
        budgets=budget_gate(settings, client, engine, prices),
    )
    observability = build_observability(settings, router, lag=shipper)
    runtime = Runtime(
        engine=engine,
        directory=directory,
        admission=admission,
        shipper=shipper if settings.usage_ledger else None,
        redis_client=client,
        redis_prefix=settings.redis_prefix,
        refresh_s=settings.key_cache_refresh_s,
        close_providers=registry.aclose if owns_registry else None,
        shared_metrics=observability.shared,
    )
    endpoints = Endpoints(
        router,
        admission=admission,
        ledger=ledger,
        max_json_depth=settings.max_json_depth,
        send_timeout_s=settings.stream_send_timeout_s,
        openapi=build_document(metrics_secured=settings.metrics_require_admin),
    )
    admin = (
        AdminApi(KeyAdmin(repository, runtime.announce, admission.budgets), UsageReport(engine))
        if admin_keys
        else None
    )
    if admission.budgets is not None:
        admission.budgets.soft.on_reached = observability.count_soft_limit
    return Gateway(
        Routes(
            endpoints,
            admin,
            page_routes() if admin_keys else None,
            metrics=observability.metrics_endpoint,
        ),
        keys=directory,
        admin_keys=admin_keys,
        registry=registry,
        max_request_bytes=settings.max_request_bytes,
        ledger=ledger,
        observers=observability.observers,
        on_startup=runtime.start,
        on_shutdown=runtime.stop,
    )
