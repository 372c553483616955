"""The usage page in a real browser: a gateway on 127.0.0.1 in mock mode serves chat requests
from a few keys and teams (answers, failures, a limit rejection); once the ledger holds them,
headless Chromium opens /ui, is refused with a wrong admin key, enters the right one, and the
page must show the ledger's totals, draw both charts and fill its tables. The screenshot is
saved to test-artifacts/usage-page.png."""

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ai_gateway.app import create_app
from ai_gateway.config.settings import Settings
from ai_gateway.usage.tables import ledger
from tests.conftest import ONE_ATTEMPT, make_settings
from tests.db.databases import opened
from tests.e2e.server import GatewayServer
from tests.ui.browser import Page, chromium

pytestmark = pytest.mark.anyio

ADMIN_KEY = "sk-admin-ui-test"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SCREENSHOT_WIDTH = 1440
PRICED = "cerebras/gpt-oss-120b"
SHIP_TIMEOUT_S = 15.0


def gateway_settings(directory: Path) -> Settings:
    """Mock mode, the admin API on, the ledger in a SQLite file shipped every 0.2 s."""
    return make_settings(
        cerebras_mock="true",
        gateway_admin_keys=ADMIN_KEY,
        database_url=f"sqlite:///{directory / 'gateway.db'}",
        usage_journal_dir=directory / "journal",
        usage_ship_interval_s=0.2,
    )


async def issue_keys(admin: httpx.AsyncClient) -> dict[str, tuple[str, str]]:
    """Two teams and four keys (carol's limited to 2 requests a minute): name -> (id,
    secret)."""
    for team in ("research", "support"):
        (await admin.post("/admin/v1/teams", json={"name": team})).raise_for_status()
    specs: list[dict[str, Any]] = [
        {"name": "alice", "team": "research"},
        {"name": "bob", "team": "research"},
        {"name": "carol", "team": "support", "rpm_limit": 2},
        {"name": "dave"},
    ]
    secrets = {}
    for spec in specs:
        created = await admin.post("/admin/v1/keys", json=spec)
        created.raise_for_status()
        secrets[spec["name"]] = (created.json()["id"], created.json()["key"])
    return secrets


def chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def make_traffic(base_url: str, keys: dict[str, tuple[str, str]]) -> list[int]:
    """Chat requests from every key; the statuses they got, in order."""
    plan = [
        ("alice", chat(PRICED, "summarise the quarterly report in three short lines")),
        ("alice", chat(PRICED, "and now in one line please")),
        ("alice", chat(PRICED, "stream it", stream=True)),
        ("bob", chat("cerebras/zai-glm-4.7", "translate hello world to French")),
        ("bob", chat("cerebras/llama3.1-8b", "count to five")),
        ("carol", chat(PRICED, "first")),
        ("carol", chat(PRICED, "second")),
        ("carol", chat(PRICED, "third, over the limit")),
        ("dave", chat("cerebras/no-such-model", "this model does not exist")),
        ("dave", chat(PRICED, "bad effort", reasoning_effort="extreme")),
    ]
    statuses = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for name, body in plan:
            headers = {"Authorization": f"Bearer {keys[name][1]}"}
            response = await http.post("/v1/chat/completions", json=body, headers=headers)
            statuses.append(response.status_code)
    return statuses


async def ledger_rows(url: str, expected: int) -> list[dict[str, Any]]:
    """The ledger table once it holds `expected` rows (the shipper runs in the background)."""
    deadline = time.monotonic() + SHIP_TIMEOUT_S
    async with opened(url) as engine:
        while True:
            async with engine.connect() as connection:
                rows = [dict(r._mapping) for r in await connection.execute(select(ledger))]
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.1)


def ledger_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the page must show, counted here from the rows themselves."""
    return {
        "requests": len(rows),
        "tokens": sum((r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0) for r in rows),
        "cost": sum(r["cost_usd"] or 0.0 for r in rows),
        "errors": sum(
            r["status"] != "rejected"
            and (r["status"] == "interrupted" or (r["http_status"] or 0) >= 400)
            for r in rows
        ),
        "rejections": sum(r["status"] == "rejected" for r in rows),
    }


def spend_order(rows: list[dict[str, Any]], keys: dict[str, tuple[str, str]]) -> list[str]:
    """Key names by spend, then requests, most first (then by id), from the rows."""
    names = {key_id: name for name, (key_id, _) in keys.items()}
    cost: dict[str, float] = {}
    count: dict[str, int] = {}
    for row in rows:
        cost[row["key_id"]] = cost.get(row["key_id"], 0.0) + (row["cost_usd"] or 0.0)
        count[row["key_id"]] = count.get(row["key_id"], 0) + 1
    return [names[k] for k in sorted(cost, key=lambda k: (-cost[k], -count[k], k))]


async def shown_totals(page: Page) -> dict[str, str]:
    return dict(
        await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('.totals output')]"
            ".map((o) => [o.id, o.textContent]))"
        )
    )


async def drawn_bars(page: Page, chart: str) -> int:
    """How many of the chart's bars have a visible size."""
    return int(
        await page.evaluate(
            f"[...document.querySelectorAll('#{chart} rect.bar')]"
            ".filter((r) => { const b = r.getBoundingClientRect(); "
            "return b.width > 0 && b.height > 0; }).length"
        )
    )


async def column(page: Page, table: str, index: int) -> list[str]:
    """The text of one column of a table's body."""
    return list(
        await page.evaluate(
            f"[...document.querySelectorAll('#{table} tbody tr')]"
            f".map((row) => row.cells[{index}]?.textContent ?? '')"
        )
    )


async def test_usage_page_shows_a_real_run(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path)
    with GatewayServer(create_app(settings, config=ONE_ATTEMPT), settings=settings) as gateway:
        admin_headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=admin_headers) as admin:
            keys = await issue_keys(admin)
        statuses = await make_traffic(gateway.url, keys)
        rows = await ledger_rows(settings.database_url or "", expected=len(statuses))
        expected = ledger_totals(rows)

        async with chromium(tmp_path) as page:
            await page.open(f"{gateway.url}/ui")
            await page.wait_for("!document.getElementById('login').hidden")
            await page.type_text("#admin-key", "sk-not-the-admin-key")
            refusal = await page.wait_for("document.getElementById('login-error').textContent")
            await page.type_text("#admin-key", ADMIN_KEY)
            await page.wait_for("document.body.dataset.loaded === 'true'")
            totals = await shown_totals(page)
            cost = float(await page.evaluate("document.getElementById('total-cost').dataset.value"))
            cost_bars, token_bars = (
                await drawn_bars(page, "chart-cost"),
                await drawn_bars(page, "chart-tokens"),
            )
            day_points = await page.evaluate("document.getElementById('chart-cost').dataset.points")
            top_keys = await column(page, "top-keys", 0)
            top_teams = await column(page, "top-teams", 0)
            top_models = await column(page, "top-models", 0)
            failures = await column(page, "failure-kinds", 0)
            budget_keys = await column(page, "budgets", 0)
            budgets = await column(page, "budgets", 3)
            shot = await page.screenshot(width=SCREENSHOT_WIDTH)
            await page.evaluate(
                "(() => { const s = document.getElementById('window'); s.value = '24h'; "
                "s.dispatchEvent(new Event('change')); })()"
            )
            await page.wait_for("document.querySelector('.bucket-unit').textContent === 'hour'")
            await page.wait_for("document.body.dataset.loaded === 'true'")
            hour_points = await page.evaluate(
                "document.getElementById('chart-tokens').dataset.points"
            )
            hour_requests = await page.evaluate(
                "document.getElementById('total-requests').textContent"
            )
            page_errors = list(page.errors)

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "usage-page.png").write_bytes(shot)

    assert statuses == [200, 200, 200, 200, 200, 200, 200, 429, 404, 400]
    assert len(rows) == len(statuses)
    assert refusal == "That admin key was refused."
    assert totals == {
        "total-requests": str(expected["requests"]),
        "total-tokens": f"{expected['tokens']:,}",
        "total-cost": totals["total-cost"],
        "total-errors": str(expected["errors"]),
        "total-rejections": str(expected["rejections"]),
    }
    assert expected == {**expected, "requests": 10, "errors": 2, "rejections": 1}
    assert expected["tokens"] > 0
    assert cost == pytest.approx(expected["cost"], abs=1e-9)
    assert cost > 0
    assert totals["total-cost"].startswith("$")
    assert cost_bars >= 1
    assert token_bars >= 1
    assert int(day_points) == 8  # today and the seven days before it
    assert int(hour_points) >= 24
    assert hour_requests == "10"
    assert top_keys == spend_order(rows, keys)
    assert set(top_teams) == {"research", "support", "no team"}
    assert "cerebras/gpt-oss-120b" in top_models
    assert "rejected (limit)" in failures
    assert "404" in failures
    assert sorted(name.split(" ")[0] for name in budget_keys) == ["alice", "bob", "carol", "dave"]
    assert all(text == "no budget" or " per " in text for text in budgets)
    assert shot.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(shot) > 20_000
    assert page_errors == []
