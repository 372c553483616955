"""/metrics through the whole app (started, its ledger and SQLite database open) over the
FakeProvider: the GenAI semantic conventions' names, labels and buckets; the gateway's own
counters for routes, attempts, fallbacks, hedges, breakers, rejections and cost; bounded labels;
who may scrape."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai_gateway.app import create_app
from ai_gateway.config.file import AliasConfig, BreakerConfig, GatewayConfig, RoutingConfig
from ai_gateway.config.settings import Settings
from ai_gateway.errors import ConfigurationError, ProviderError
from ai_gateway.observability.recorder import MetricsObserver
from ai_gateway.providers.registry import Registry
from ai_gateway.schemas import ChatCompletionRequest, ChatCompletionResponse
from tests.conftest import ONE_ATTEMPT, app_client, lifespan, make_settings
from tests.fakes import GATEWAY_KEY, MODEL, FakeProvider, chat_body
from tests.fresh_interpreter import last_line
from tests.observability.scrape import Scrape

pytestmark = pytest.mark.anyio

ADMIN_KEY = "sk-admin-metrics-test"
DIRECT = f"cerebras/{MODEL}"
GENAI = {
    "gen_ai_operation_name": "chat",
    "gen_ai_provider_name": "cerebras",
    "gen_ai_request_model": DIRECT,
    "gen_ai_response_model": MODEL,
}
SEMCONV_BUCKETS = {
    "gen_ai_client_token_usage": [
        1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
    ],
    "gen_ai_server_request_duration_seconds": [
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ],
    "gen_ai_server_time_to_first_token_seconds": [
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    ],
    "gen_ai_server_time_per_output_token_seconds": [
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
    ],
}  # fmt: skip


@dataclass
class SlowProvider(FakeProvider):
    """A FakeProvider whose answers take `delay_s`."""

    delay_s: float = 0.0

    async def chat_completions(self, req: ChatCompletionRequest) -> ChatCompletionResponse:
        await asyncio.sleep(self.delay_s)
        return await super().chat_completions(req)


@dataclass
class Gateway:
    http: httpx.AsyncClient

    async def chat(
        self, key: str = GATEWAY_KEY, headers: dict[str, str] | None = None, **overrides: Any
    ) -> httpx.Response:
        body = chat_body(**{"model": DIRECT, **overrides})
        sent = {"Authorization": f"Bearer {key}", **(headers or {})}
        return await self.http.post("/v1/chat/completions", json=body, headers=sent)

    async def scrape(self, **headers: str) -> Scrape:
        response = await self.http.get("/metrics", headers=headers)
        assert response.status_code == 200, response.text
        return Scrape.parse(response.text)


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
        usage_journal_dir=tmp_path / "journal",
        **overrides,
    )


@asynccontextmanager
async def gateway(
    tmp_path: Path,
    *providers: FakeProvider,
    config: GatewayConfig = ONE_ATTEMPT,
    **overrides: Any,
) -> AsyncIterator[Gateway]:
    registry = Registry({p.name: p for p in providers or (FakeProvider(),)})
    app = create_app(settings_for(tmp_path, **overrides), registry=registry, config=config)
    async with lifespan(app), app_client(app, None) as http:
        yield Gateway(http)


def alias(*models: str, **fields: Any) -> GatewayConfig:
    """One alias `smart` over `models`, one attempt per deployment, breakers after 1 failure."""
    routing = RoutingConfig(retries=0, breaker=BreakerConfig(consecutive_failures=1))
    deployments = [{"model": model} for model in models]
    return GatewayConfig(
        aliases={"smart": AliasConfig.model_validate({"deployments": deployments, **fields})},
        routing=routing,
    )


async def test_a_completion_and_a_stream_carry_the_genai_names_labels_and_values(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path) as gw:
        assert (await gw.chat()).status_code == 200
        assert (await gw.chat(stream=True)).status_code == 200
        scrape = await gw.scrape()

    assert scrape.value("gen_ai_client_token_usage_count", **GENAI, gen_ai_token_type="input") == 2
    assert scrape.value("gen_ai_client_token_usage_sum", **GENAI, gen_ai_token_type="input") == 6
    assert scrape.value("gen_ai_client_token_usage_sum", **GENAI, gen_ai_token_type="output") == 4
    duration = "gen_ai_server_request_duration_seconds_count"
    assert scrape.value(duration, **GENAI, error_type="") == 2
    # time to first token and per output token: streams only, the stream's 2 output tokens
    assert scrape.value("gen_ai_server_time_to_first_token_seconds_count", **GENAI) == 1
    assert scrape.value("gen_ai_server_time_per_output_token_seconds_count", **GENAI) == 1
    assert scrape.value("ai_gateway_requests_total", route=DIRECT, status_code="200") == 2
    assert scrape.value("ai_gateway_added_latency_seconds_count", route=DIRECT) == 2
    attempts = {"deployment": DIRECT, "outcome": "success", "error_type": ""}
    assert scrape.value("ai_gateway_upstream_attempts_total", **attempts) == 2
    assert scrape.value("ai_gateway_cost_usd_total", team="none") > 0
    assert scrape.total("ai_gateway_fallbacks_total") == 0
    for name, bounds in SEMCONV_BUCKETS.items():
        assert scrape.buckets(name) == bounds, name


async def test_a_failed_request_names_its_error_type_everywhere(tmp_path: Path) -> None:
    failing = FakeProvider(error=ProviderError("cerebras returned HTTP 500"))
    async with gateway(tmp_path, failing, config=alias(DIRECT)) as gw:
        assert (await gw.chat(model="smart")).status_code == 502
        scrape = await gw.scrape()

    failed = {**GENAI, "gen_ai_provider_name": "none", "gen_ai_response_model": "none"}
    failed["gen_ai_request_model"] = "smart"
    duration = "gen_ai_server_request_duration_seconds_count"
    assert scrape.value(duration, **failed, error_type="upstream_error") == 1
    assert scrape.value(duration, **failed, error_type="") == 0
    assert scrape.value("ai_gateway_requests_total", route="smart", status_code="502") == 1
    attempt = {"deployment": DIRECT, "outcome": "failure", "error_type": "upstream_error"}
    assert scrape.value("ai_gateway_upstream_attempts_total", **attempt) == 1
    assert scrape.total("gen_ai_client_token_usage_count") == 0


async def test_a_fallback_is_counted_and_the_breaker_it_opened_shows_open(tmp_path: Path) -> None:
    down = FakeProvider(name="alpha", error=ProviderError("alpha returned HTTP 503"))
    up = FakeProvider(name="beta")
    config = alias(f"alpha/{MODEL}", f"beta/{MODEL}")
    async with gateway(tmp_path, down, up, config=config) as gw:
        before = await gw.scrape()
        assert (await gw.chat(model="smart")).status_code == 200
        after = await gw.scrape()

    assert before.value("ai_gateway_breaker_state", deployment=f"alpha/{MODEL}") == 0
    assert after.value("ai_gateway_breaker_state", deployment=f"alpha/{MODEL}") == 2
    assert after.value("ai_gateway_breaker_state", deployment=f"beta/{MODEL}") == 0
    fallback = {"route": "smart", "deployment": f"beta/{MODEL}"}
    assert after.value("ai_gateway_fallbacks_total", **fallback) == 1
    assert after.value("ai_gateway_requests_total", route="smart", status_code="200") == 1
    provider = "gen_ai_provider_name"
    assert after.total("gen_ai_server_request_duration_seconds_count", **{provider: "beta"}) == 1


async def test_a_hedge_is_counted_and_its_loser_is_cancelled(tmp_path: Path) -> None:
    slow = SlowProvider(name="alpha", delay_s=1.0)
    fast = FakeProvider(name="beta")
    config = alias(f"alpha/{MODEL}", f"beta/{MODEL}", hedge_after_ms=20)
    async with gateway(tmp_path, slow, fast, config=config) as gw:
        assert (await gw.chat(model="smart")).status_code == 200
        scrape = await gw.scrape()

    assert scrape.value("ai_gateway_hedges_total", route="smart", deployment=f"beta/{MODEL}") == 1
    assert scrape.total("ai_gateway_fallbacks_total") == 0
    cancelled = {"deployment": f"alpha/{MODEL}", "outcome": "cancelled", "error_type": "cancelled"}
    assert scrape.value("ai_gateway_upstream_attempts_total", **cancelled) == 1
    won = {"deployment": f"beta/{MODEL}", "outcome": "success", "error_type": ""}
    assert scrape.value("ai_gateway_upstream_attempts_total", **won) == 1


async def test_rejections_by_reason_and_cost_by_team(tmp_path: Path) -> None:
    async with gateway(tmp_path, gateway_admin_keys=ADMIN_KEY) as gw:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        team = await gw.http.post("/admin/v1/teams", json={"name": "research"}, headers=admin)
        assert team.status_code == 201, team.text
        key = await gw.http.post(
            "/admin/v1/keys",
            json={"name": "k", "team": "research", "rpm_limit": 1},
            headers=admin,
        )
        secret = key.json()["key"]
        assert (await gw.chat(secret)).status_code == 200
        assert (await gw.chat(secret)).status_code == 429
        scrape = await gw.scrape()

    assert scrape.value("ai_gateway_rejections_total", reason="rpm_limit_exceeded") == 1
    assert scrape.value("ai_gateway_requests_total", route=DIRECT, status_code="429") == 1
    teams = {s.labels["team"] for s in scrape.matching("ai_gateway_cost_usd_total")}
    assert len(teams) == 1
    assert teams != {"none"}
    assert scrape.total("ai_gateway_cost_usd_total") > 0


async def test_a_request_without_a_known_price_is_counted_as_unpriced(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        assert (await gw.chat(model="cerebras/no-price-known")).status_code == 200
        scrape = await gw.scrape()

    unpriced = {"provider": "cerebras", "model": "no-price-known"}
    assert scrape.value("ai_gateway_unpriced_requests_total", **unpriced) == 1
    assert scrape.total("ai_gateway_cost_usd_total") == 0


async def test_names_callers_type_become_other_until_one_succeeds(tmp_path: Path) -> None:
    failing = FakeProvider(error=ProviderError("cerebras returned HTTP 500"))
    async with gateway(tmp_path, failing) as gw:
        for index in range(5):
            assert (await gw.chat(model=f"cerebras/typo-{index}")).status_code == 502
        scrape = await gw.scrape()

    routes = {s.labels["route"] for s in scrape.matching("ai_gateway_requests_total")}
    assert routes == {"other"}
    deployments = {
        s.labels["deployment"] for s in scrape.matching("ai_gateway_upstream_attempts_total")
    }
    assert deployments == {"other"}


async def test_key_ids_are_labels_only_when_asked(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        await gw.chat()
        plain = await gw.scrape()
    async with gateway(tmp_path, metrics_key_labels=True) as gw:
        await gw.chat()
        labelled = await gw.scrape()

    assert all("key_id" not in s.labels for s in plain.matching("ai_gateway_requests_total"))
    key_ids = {s.labels["key_id"] for s in labelled.matching("ai_gateway_requests_total")}
    assert len(key_ids) == 1
    assert key_ids != {"none"}
    assert all("key_id" in s.labels for s in labelled.matching("ai_gateway_cost_usd_total"))


async def test_scrapers_get_openmetrics_when_they_ask(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        await gw.chat()
        response = await gw.http.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )

    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert "# UNIT gen_ai_server_request_duration_seconds seconds" in response.text
    assert response.text.endswith("# EOF\n")


async def test_metrics_are_public_by_default_and_admin_only_when_asked(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        assert (await gw.http.get("/metrics")).status_code == 200
    async with gateway(tmp_path, gateway_admin_keys=ADMIN_KEY, metrics_require_admin=True) as gw:
        refused = await gw.http.get("/metrics")
        caller = await gw.http.get("/metrics", headers={"Authorization": f"Bearer {GATEWAY_KEY}"})
        admin = await gw.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})

    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert caller.status_code == 401
    assert admin.status_code == 200
    assert "ai_gateway_requests_total" in admin.text


def test_admin_only_metrics_without_admin_keys_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="METRICS_REQUIRE_ADMIN"):
        create_app(settings_for(tmp_path, metrics_require_admin=True), config=ONE_ATTEMPT)


def test_a_bad_otlp_endpoint_is_a_configuration_error(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, otel_exporter_otlp_endpoint="collector:4318")
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        create_app(settings, config=ONE_ATTEMPT)


def test_without_an_otlp_endpoint_only_metrics_observe(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path), config=ONE_ATTEMPT)

    assert [type(o) for o in app.observers] == [MetricsObserver]


def test_otel_sdk_disabled_turns_tracing_off_whatever_the_endpoint(tmp_path: Path) -> None:
    endpoint = "http://127.0.0.1:4318"
    traced = create_app(
        settings_for(tmp_path, otel_exporter_otlp_endpoint=endpoint), config=ONE_ATTEMPT
    )
    disabled = create_app(
        settings_for(tmp_path, otel_exporter_otlp_endpoint=endpoint, otel_sdk_disabled=True),
        config=ONE_ATTEMPT,
    )

    assert len(traced.observers) == 2
    assert [type(o) for o in disabled.observers] == [MetricsObserver]


def test_without_an_otlp_endpoint_no_tracing_code_is_imported(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from ai_gateway.app import create_app\n"
        "from tests.conftest import ONE_ATTEMPT, make_settings\n"
        "create_app(make_settings(), config=ONE_ATTEMPT)\n"
        "print([name for name in sys.modules\n"
        "       if name.startswith(('ai_gateway.observability.tracing', 'opentelemetry'))])\n"
    )

    assert last_line(script, tmp_path) == "[]"


async def test_with_metrics_off_requests_are_served_and_metrics_is_a_404(tmp_path: Path) -> None:
    async with gateway(tmp_path, metrics_enabled=False) as gw:
        answer = await gw.chat()
        metrics = await gw.http.get("/metrics")

    assert answer.status_code == 200
    assert metrics.status_code == 404
    assert metrics.json()["error"]["message"].startswith("Metrics are off")


async def test_a_budget_s_soft_threshold_is_counted_once_per_period(tmp_path: Path) -> None:
    provider = FakeProvider()
    provider.completion["usage"] = {
        "prompt_tokens": 1000,
        "completion_tokens": 1000,
        "total_tokens": 2000,
    }
    async with gateway(tmp_path, provider, gateway_admin_keys=ADMIN_KEY) as gw:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        key = await gw.http.post(
            "/admin/v1/keys",
            json={"name": "k", "budget_usd": 0.001, "budget_period": "day"},
            headers=admin,
        )
        assert key.status_code == 201, key.text
        secret = key.json()["key"]
        first = await gw.chat(secret, max_tokens=1)
        second = await gw.chat(secret, max_tokens=1)
        scrape = await gw.scrape()

    assert (first.status_code, second.status_code) == (200, 429)
    assert second.json()["error"]["code"] == "budget_exceeded"
    assert scrape.value("ai_gateway_budget_soft_limit_reached_total", scope="key") == 1


async def test_an_accept_header_the_exposition_cannot_read_gets_the_text_format(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path) as gw:
        response = await gw.http.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=abc"}
        )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
