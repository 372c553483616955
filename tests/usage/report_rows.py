"""Ledger rows written straight into `usage_ledger` for the report tests, and one set of them
whose totals are known."""

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.usage.tables import ledger


def entry(created_at: datetime, **values: Any) -> dict[str, Any]:
    """A complete ledger row: a 200 without tokens unless `values` say otherwise."""
    row: dict[str, Any] = {column.name: None for column in ledger.columns}
    row |= {
        "entry_id": f"use_{secrets.token_hex(16)}",
        "request_id": f"req_{secrets.token_hex(8)}",
        "created_at": created_at,
        "status": "200",
        "http_status": 200,
        "is_stream": False,
        "latency_ms": 10.0,
    }
    return row | values


async def insert_rows(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    """The rows stored in one transaction."""
    async with engine.begin() as connection:
        await connection.execute(insert(ledger), rows)


def known_rows(now: datetime | None = None) -> list[dict[str, Any]]:
    """Three keys over a week, with an error, an interrupted request, a limit rejection, a
    request of unknown price and one entry older than the week."""
    now = now or datetime.now(UTC)
    model = {"provider": "cerebras", "model": "gpt-oss-120b"}
    return [
        entry(
            now - timedelta(hours=1),
            key_id="key_a",
            team="team_x",
            **model,
            prompt_tokens=10,
            completion_tokens=20,
            cost_usd=0.001,
            latency_ms=30.0,
        ),
        entry(
            now - timedelta(days=2),
            key_id="key_a",
            team="team_x",
            **model,
            prompt_tokens=5,
            completion_tokens=5,
            cached_tokens=2,
            reasoning_tokens=3,
            cost_usd=0.0005,
            latency_ms=50.0,
        ),
        entry(
            now - timedelta(hours=3),
            key_id="key_b",
            provider="openai",
            model="gpt-4.1",
            status="502",
            http_status=502,
            error_code="upstream_error",
            latency_ms=70.0,
        ),
        entry(
            now - timedelta(minutes=30),
            key_id="key_b",
            status="rejected",
            http_status=429,
            error_code="rate_limit_exceeded",
            latency_ms=1.0,
        ),
        entry(
            now - timedelta(days=1),
            key_id="key_c",
            team="team_y",
            provider="cerebras",
            model="llama3.1-8b",
            prompt_tokens=7,
            completion_tokens=8,
        ),
        entry(
            now - timedelta(hours=5),
            key_id="key_a",
            team="team_x",
            **model,
            status="interrupted",
            http_status=None,
            cost_usd=0.002,
            reserved_tokens=300,
        ),
        entry(
            now - timedelta(days=10),
            key_id="key_a",
            team="team_x",
            **model,
            prompt_tokens=100,
            completion_tokens=100,
            cost_usd=1.0,
        ),
    ]
