"""`GET /admin/v1/usage` and `/admin/v1/usage/requests` through the whole app (started, its
SQLite database opened), and the usage page's files at `/ui`."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.db.migrations import upgrade
from ai_gateway.providers.registry import Registry
from ai_gateway.ui.page import CONTENT_SECURITY_POLICY
from tests.conftest import make_settings, started_app
from tests.db.databases import opened
from tests.fakes import GATEWAY_KEY, FakeProvider
from tests.usage.report_rows import insert_rows, known_rows

pytestmark = pytest.mark.anyio

ADMIN_KEY = "sk-admin-usage-test"
PAGE_FILES = [
    ("/ui", "text/html; charset=utf-8", b'<script type="module" src="/ui/app.js">'),
    ("/ui/", "text/html; charset=utf-8", b"<title>"),
    ("/ui/app.js", "text/javascript; charset=utf-8", b'from "/ui/chart.js"'),
    ("/ui/chart.js", "text/javascript; charset=utf-8", b"export function barChart"),
    ("/ui/style.css", "text/css; charset=utf-8", b".chart .bar"),
]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The gateway's SQLite database, migrated, holding the known rows."""
    async with opened(f"sqlite:///{tmp_path / 'gateway.db'}") as opened_engine:
        await upgrade(opened_engine)
        await insert_rows(opened_engine, known_rows())
        yield opened_engine


@pytest.fixture
async def http(tmp_path: Path, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The started gateway with the admin API on, sending the admin key."""
    settings = make_settings(
        gateway_admin_keys=ADMIN_KEY, database_url=f"sqlite:///{tmp_path / 'gateway.db'}"
    )
    provider = FakeProvider()
    async with started_app(settings, Registry({provider.name: provider}), key=ADMIN_KEY) as client:
        yield client


def envelope(message: str, param: str | None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": None,
        }
    }


async def test_totals_per_key(http: httpx.AsyncClient) -> None:
    response = await http.get("/admin/v1/usage", params={"by": "key", "since": "7d"})

    body = response.json()
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert body["object"] == "list"
    assert body["by"] == "key"
    assert body["since"].endswith("Z")
    assert [(row["key_id"], row["requests"], row["cost_usd"]) for row in body["data"]] == [
        ("key_a", 3, 0.0035),
        ("key_b", 2, 0.0),
        ("key_c", 1, 0.0),
    ]
    assert body["total"]["requests"] == 6
    assert body["total"]["rejections"] == 1


async def test_totals_default_to_a_week_by_day(http: httpx.AsyncClient) -> None:
    body = (await http.get("/admin/v1/usage/")).json()

    assert body["by"] == "day"
    assert sum(row["requests"] for row in body["data"]) == 6


async def test_records_page_newest_first(http: httpx.AsyncClient) -> None:
    first = (await http.get("/admin/v1/usage/requests", params={"limit": 4})).json()
    rest = (
        await http.get("/admin/v1/usage/requests", params={"after": first["next_after"]})
    ).json()

    assert first["object"] == "list"
    assert first["has_more"] is True
    assert first["next_after"] == first["data"][-1]["id"]
    assert rest["has_more"] is False
    assert rest["next_after"] is None
    records = first["data"] + rest["data"]
    assert len(records) == 6
    assert [r["created_at"] for r in records] == sorted(
        (r["created_at"] for r in records), reverse=True
    )
    assert {"request_id", "status", "prompt_tokens", "completion_tokens", "cost_usd"} <= set(
        records[0]
    )


async def test_records_filtered_by_outcome(http: httpx.AsyncClient) -> None:
    body = (await http.get("/admin/v1/usage/requests?outcome=rejected")).json()

    assert [(row["key_id"], row["status"], row["http_status"]) for row in body["data"]] == [
        ("key_b", "rejected", 429)
    ]


@pytest.mark.parametrize(
    ("path", "message", "param"),
    [
        (
            "/admin/v1/usage?since=1y",
            "Invalid 'since': must be a duration such as 7d, 24h or 30m, or an ISO 8601 date "
            "or date-time.",
            "since",
        ),
        (
            "/admin/v1/usage?since=2000-01-01",
            "Invalid 'since': may reach back at most 400 days.",
            "since",
        ),
        (
            "/admin/v1/usage?by=hour&since=60d",
            "Invalid 'since': by=hour may reach back at most 31 days.",
            "since",
        ),
        (
            "/admin/v1/usage?by=user",
            "Invalid 'by': input should be 'key', 'team', 'model', 'day', 'hour' or 'status'.",
            "by",
        ),
        (
            "/admin/v1/usage/requests?limit=5000",
            "Invalid 'limit': input should be less than or equal to 1000.",
            "limit",
        ),
        (
            "/admin/v1/usage/requests?after=use_gone",
            "Invalid 'after': no usage record with id 'use_gone'.",
            "after",
        ),
        (
            "/admin/v1/usage/requests?user=x",
            "Unrecognized request argument supplied: 'user'.",
            "user",
        ),
    ],
)
async def test_bad_parameters_are_400s_in_the_openai_shape(
    http: httpx.AsyncClient, path: str, message: str, param: str
) -> None:
    response = await http.get(path)

    assert response.status_code == 400
    assert response.json() == envelope(message, param)


@pytest.mark.parametrize("path", ["/admin/v1/usage", "/admin/v1/usage/requests"])
async def test_usage_needs_the_admin_key(http: httpx.AsyncClient, path: str) -> None:
    anonymous = await http.get(path, headers={"Authorization": ""})
    caller = await http.get(path, headers={"Authorization": f"Bearer {GATEWAY_KEY}"})

    assert anonymous.status_code == 401
    assert caller.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"


async def test_usage_is_read_only(http: httpx.AsyncClient) -> None:
    response = await http.post("/admin/v1/usage/requests", json={})

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(("path", "content_type", "excerpt"), PAGE_FILES)
async def test_page_files_are_served_with_strict_headers(
    http: httpx.AsyncClient, path: str, content_type: str, excerpt: bytes
) -> None:
    response = await http.get(path, headers={"Authorization": ""})

    assert response.status_code == 200
    assert excerpt in response.content
    assert response.headers["content-type"] == content_type
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"].startswith('"')


async def test_page_holds_no_inline_script_or_style(http: httpx.AsyncClient) -> None:
    page = (await http.get("/ui")).text

    assert "<script>" not in page
    assert "<style" not in page
    assert " style=" not in page
    assert " on" + "click=" not in page


async def test_an_unchanged_file_is_a_304(http: httpx.AsyncClient) -> None:
    first = await http.get("/ui/app.js")
    again = await http.get("/ui/app.js", headers={"If-None-Match": first.headers["etag"]})

    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]


@pytest.mark.parametrize(
    "path",
    [
        "/ui/missing.js",
        "/ui/../pyproject.toml",
        "/ui/%2e%2e/page.py",
        "/ui/page.py",
        "/ui/__init__.py",
        "/ui/app.js/x",
    ],
)
async def test_unknown_page_files_are_404_json(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "content-security-policy" not in response.headers


async def test_without_admin_keys_there_is_no_page_and_no_usage_api(tmp_path: Path) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}")
    provider = FakeProvider()
    async with started_app(settings, Registry({provider.name: provider})) as client:
        page = await client.get("/ui")
        usage = await client.get("/admin/v1/usage")

    assert page.status_code == 404
    assert usage.status_code == 404


async def test_a_since_at_the_edge_of_the_calendar_is_a_400(http: httpx.AsyncClient) -> None:
    response = await http.get("/admin/v1/usage?since=9999-12-31T23:59:59-05:00")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "since"
