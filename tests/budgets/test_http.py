"""Budgets through the whole app (started, its SQLite database opened, keys issued through the
admin API, the FakeProvider's `cerebras/gpt-oss-120b` priced from the shipped table): the 429
of a key's and a team's budget, its ledger entry, the admin view of the spend, and spend that
survives a restart through the usage ledger. Run with budgets in memory and in Redis."""

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import insert, select

from ai_gateway.api.body import parse_chat_request
from ai_gateway.api.dispatch import Gateway
from ai_gateway.app import create_app
from ai_gateway.budgets.store import to_nanos
from ai_gateway.config.constants import DEFAULT_COMPLETION_TOKENS_ESTIMATE, DEFAULT_MAX_JSON_DEPTH
from ai_gateway.config.settings import Settings
from ai_gateway.db.engine import create_engine, database_url
from ai_gateway.limits.estimate import estimate
from ai_gateway.providers.registry import Registry
from ai_gateway.usage.tables import ledger
from tests.conftest import ONE_ATTEMPT, app_client, lifespan, make_settings
from tests.fakes import MODEL, FakeProvider, chat_body
from tests.services import REDIS_URL, redis_prefix

pytestmark = pytest.mark.anyio

ADMIN_KEY = "sk-admin-budgets-test"
COST = 3 * 350 + 2 * 750
"""The FakeProvider's usage (3 prompt, 2 completion tokens) at gpt-oss-120b's price, nano-USD."""
MAX_TOKENS = 10


def body_bytes() -> bytes:
    return orjson.dumps(chat_body(model=f"cerebras/{MODEL}", max_tokens=MAX_TOKENS))


def reservation() -> int:
    """What each request reserves: its prompt estimate and max_tokens at the model's price."""
    parsed = parse_chat_request(body_bytes(), max_depth=DEFAULT_MAX_JSON_DEPTH)
    total, prompt = estimate(parsed, default_completion_tokens=DEFAULT_COMPLETION_TOKENS_ESTIMATE)
    return to_nanos(prompt * 0.35e-6 + (total - prompt) * 0.75e-6)


@dataclass
class Harness:
    app: Gateway
    http: httpx.AsyncClient

    async def admin(self, method: str, path: str, **payload: Any) -> Any:
        response = await self.http.request(
            method,
            f"/admin/v1/{path}",
            json=payload or None,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def chat(self, secret: str) -> httpx.Response:
        response = await self.http.post(
            "/v1/chat/completions",
            content=body_bytes(),
            headers={"Authorization": f"Bearer {secret}", "content-type": "application/json"},
        )
        budgets: Any = self.app.routes.endpoints.admission.budgets
        await budgets.store.flush()  # Redis settles go in the background
        return response


@pytest.fixture(params=["memory", "redis"])
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    with redis_prefix() as prefix:
        shared = {"redis_url": REDIS_URL, "redis_prefix": prefix}
        yield make_settings(
            gateway_admin_keys=ADMIN_KEY,
            database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
            usage_journal_dir=tmp_path / "journal",
            usage_ship_interval_s=0.05,
            **(shared if request.param == "redis" else {}),
        )


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[Harness]:
    provider = FakeProvider()
    app = create_app(settings, registry=Registry({provider.name: provider}), config=ONE_ATTEMPT)
    async with lifespan(app), app_client(app, None) as http:
        yield Harness(app, http)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Harness]:
    async with started(settings) as harness:
        yield harness


async def test_a_key_is_refused_once_its_budget_has_no_room(gateway: Harness) -> None:
    budget_nanos = 3 * COST + reservation()  # the 4th request fits exactly
    key = await gateway.admin("POST", "keys", name="b", budget_usd=budget_nanos / 1e9)

    statuses = [(await gateway.chat(key["key"])).status_code for _ in range(4)]
    refused = await gateway.chat(key["key"])

    assert statuses == [200, 200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "insufficient_quota"
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert refused.json()["error"]["message"].startswith(f"Budget exceeded for key {key['id']}: ")
    assert " per day (" not in refused.json()["error"]["message"]  # a month by default
    assert " per month ($0.0000102 used). It resets at " in refused.json()["error"]["message"]
    assert refused.headers["x-should-retry"] == "false"
    assert int(refused.headers["retry-after"]) > 0


async def test_a_team_budget_is_shared_by_its_keys(gateway: Harness) -> None:
    team = await gateway.admin(
        "POST", "teams", name="eng", budget_usd=(COST + reservation()) / 1e9, budget_period="day"
    )
    first = await gateway.admin("POST", "keys", name="a", team=team["id"])
    second = await gateway.admin("POST", "keys", name="b", team=team["id"])

    assert (await gateway.chat(first["key"])).status_code == 200
    assert (await gateway.chat(first["key"])).status_code == 200
    refused = await gateway.chat(second["key"])

    assert refused.status_code == 429
    assert f"Budget exceeded for team {team['id']}: " in refused.json()["error"]["message"]
    assert "per day" in refused.json()["error"]["message"]


async def test_the_admin_api_shows_the_period_s_spend(gateway: Harness) -> None:
    key = await gateway.admin("POST", "keys", name="b", budget_usd=1.0, budget_period="week")
    await gateway.chat(key["key"])

    shown = await gateway.admin("GET", f"keys/{key['id']}")

    now = datetime.now(UTC)
    monday = now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() - (
        now.weekday() * 86400
    )
    assert key["budget"]["spent_usd"] == 0.0
    assert shown["budget"] == {
        "limit_usd": 1.0,
        "period": "week",
        "period_start": int(monday),
        "spent_usd": COST / 1e9,
        "soft_limit_reached": False,
    }


async def test_a_raised_budget_applies_at_once_and_a_removed_one_frees_the_key(
    gateway: Harness,
) -> None:
    key = await gateway.admin("POST", "keys", name="b", budget_usd=reservation() / 1e9)
    assert (await gateway.chat(key["key"])).status_code == 200
    assert (await gateway.chat(key["key"])).status_code == 429

    raised = await gateway.admin("PATCH", f"keys/{key['id']}", budget_usd=1.0, budget_period="day")
    assert (await gateway.chat(key["key"])).status_code == 200
    removed = await gateway.admin("PATCH", f"keys/{key['id']}", budget_usd=None)

    assert (raised["budget"]["limit_usd"], raised["budget"]["period"]) == (1.0, "day")
    assert removed["budget"] is None
    assert (await gateway.chat(key["key"])).status_code == 200


async def rows(settings: Settings, **where: str) -> list[Any]:
    engine = create_engine(database_url(settings.database_url))
    try:
        query = select(ledger).where(*(ledger.c[name] == value for name, value in where.items()))
        async with engine.connect() as connection:
            return list(await connection.execute(query))
    finally:
        await engine.dispose()


async def test_the_refusal_is_a_rejected_ledger_entry(gateway: Harness, settings: Settings) -> None:
    key = await gateway.admin("POST", "keys", name="b", budget_usd=1e-9)

    await gateway.chat(key["key"])
    found: list[Any] = []
    for _ in range(100):
        found = await rows(settings, key_id=key["id"])
        if found:
            break
        await asyncio.sleep(0.05)

    assert [(row.status, row.http_status, row.error_code) for row in found] == [
        ("rejected", 429, "budget_exceeded")
    ]


async def test_spend_survives_a_restart_through_the_ledger(settings: Settings) -> None:
    budget_nanos = 2 * COST + reservation()
    async with started(settings) as first:
        key = await first.admin("POST", "keys", name="b", budget_usd=budget_nanos / 1e9)
        assert (await first.chat(key["key"])).status_code == 200
        assert (await first.chat(key["key"])).status_code == 200

    with contextlib.ExitStack() as stack:
        if settings.redis_url is not None:  # as if Redis had restarted: every counter is gone
            settings = settings.model_copy(
                update={"redis_prefix": stack.enter_context(redis_prefix())}
            )
        async with started(settings) as second:
            assert (await second.chat(key["key"])).status_code == 200
            refused = await second.chat(key["key"])

    assert refused.status_code == 429
    assert "($0.00000765 used)" in refused.json()["error"]["message"]


async def test_spend_written_in_the_ledger_before_start_counts(settings: Settings) -> None:
    async with started(settings) as first:
        key = await first.admin("POST", "keys", name="b", budget_usd=0.5, budget_period="day")
    engine = create_engine(database_url(settings.database_url))
    async with engine.begin() as connection:
        await connection.execute(
            insert(ledger),
            [
                {
                    "entry_id": f"use_{secrets.token_hex(8)}",
                    "request_id": "req_old",
                    "created_at": datetime.now(UTC),
                    "key_id": key["id"],
                    "status": "200",
                    "is_stream": False,
                    "cost_usd": 0.5,
                }
            ],
        )
    await engine.dispose()

    async with started(settings) as second:
        refused = await second.chat(key["key"])

    assert refused.status_code == 429
    assert "Budget exceeded for key " in refused.json()["error"]["message"]
    assert "$0.50 per day ($0.50 used)" in refused.json()["error"]["message"]
