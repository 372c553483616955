"""The ledger from the request path: every request that goes upstream, and every one a limit
refuses, leaves exactly one entry (journaled on the request path, shipped into the database),
with what the caller got and what the upstream reported; nothing else does."""

from pathlib import Path
from typing import Any

import orjson
import pytest

from ai_gateway.config.settings import Settings
from ai_gateway.errors import ProviderError
from ai_gateway.providers.registry import Registry
from tests.conftest import make_settings, started_app
from tests.fakes import MODEL, FakeProvider, chat_body
from tests.usage.ledger_rows import ledger_rows

pytestmark = pytest.mark.anyio

ADMIN_KEY = "sk-admin-ledger-test"
ROUTE = f"cerebras/{MODEL}"


def body(**overrides: Any) -> dict[str, Any]:
    """A chat request on the unified route to the fake provider's model."""
    return chat_body(model=ROUTE, **overrides)


def ledger_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
        usage_journal_dir=tmp_path / "journal",
        gateway_admin_keys=ADMIN_KEY,
        **overrides,
    )


async def test_an_answer_and_a_stream_each_leave_one_settled_entry(tmp_path: Path) -> None:
    settings = ledger_settings(tmp_path)
    provider = FakeProvider()
    async with started_app(settings, Registry({provider.name: provider})) as http:
        answer = await http.post("/v1/chat/completions", json=body())
        streamed = await http.post("/v1/chat/completions", json=body(stream=True))
    assert (answer.status_code, streamed.status_code) == (200, 200)

    rows = await ledger_rows(f"sqlite:///{tmp_path / 'gateway.db'}")

    assert [row["request_id"] for row in rows] == [
        answer.headers["x-request-id"],
        streamed.headers["x-request-id"],
    ]
    for row, is_stream, completion in zip(rows, (False, True), (2, 2), strict=True):
        assert row["status"] == "200"
        assert row["http_status"] == 200
        assert row["is_stream"] is is_stream
        assert (row["provider"], row["model"], row["route"]) == (
            "cerebras",
            MODEL,
            f"cerebras/{MODEL}",
        )
        assert (row["prompt_tokens"], row["completion_tokens"]) == (3, completion)
        assert row["key_id"].startswith("static-")
        assert row["attempts"] == 1
        assert row["error_code"] is None
        assert row["reserved_tokens"] > 0
        assert 0 < row["ttft_ms"] <= row["latency_ms"]
    assert rows[0]["entry_id"] != rows[1]["entry_id"]
    assert list((tmp_path / "journal").iterdir()) == []  # all shipped, the journal removed


async def test_an_upstream_failure_is_entered_with_the_status_the_caller_got(
    tmp_path: Path,
) -> None:
    settings = ledger_settings(tmp_path)
    provider = FakeProvider(error=ProviderError("upstream down"))
    async with started_app(settings, Registry({provider.name: provider})) as http:
        failed = await http.post("/v1/chat/completions", json=body())

    (row,) = await ledger_rows(f"sqlite:///{tmp_path / 'gateway.db'}")

    assert (row["status"], row["http_status"]) == (str(failed.status_code), failed.status_code)
    assert row["error_code"] == failed.json()["error"]["code"]
    assert row["prompt_tokens"] is None
    assert row["cost_usd"] is None


async def test_an_unexpected_failure_is_entered_as_the_500_the_caller_got(tmp_path: Path) -> None:
    settings = ledger_settings(tmp_path)
    provider = FakeProvider(error=RuntimeError("a bug"))
    async with started_app(settings, Registry({provider.name: provider})) as http:
        failed = await http.post("/v1/chat/completions", json=body())
    assert failed.status_code == 500

    (row,) = await ledger_rows(f"sqlite:///{tmp_path / 'gateway.db'}")

    assert (row["status"], row["http_status"], row["error_code"]) == ("500", 500, "internal_error")


async def test_requests_that_never_reach_an_upstream_leave_no_entry(tmp_path: Path) -> None:
    settings = ledger_settings(tmp_path)
    provider = FakeProvider()
    async with started_app(settings, Registry({provider.name: provider})) as http:
        bad = await http.post("/v1/chat/completions", json={"model": MODEL})
        unknown = await http.post("/v1/chat/completions", json=chat_body(model="nope/none"))
        models = await http.get("/v1/models")
    assert (bad.status_code, unknown.status_code, models.status_code) == (400, 404, 200)

    assert await ledger_rows(f"sqlite:///{tmp_path / 'gateway.db'}") == []


async def test_a_request_a_limit_refuses_is_entered_as_rejected(tmp_path: Path) -> None:
    settings = ledger_settings(tmp_path)
    provider = FakeProvider()
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with started_app(settings, Registry({provider.name: provider})) as http:
        issued = await http.post(
            "/admin/v1/keys", json={"name": "one-rpm", "rpm_limit": 1}, headers=admin
        )
        key = issued.json()
        caller = {"Authorization": f"Bearer {key['key']}"}
        first = await http.post("/v1/chat/completions", json=body(), headers=caller)
        refused = await http.post("/v1/chat/completions", json=body(), headers=caller)
    assert (first.status_code, refused.status_code) == (200, 429)
    assert len(provider.requests) == 1

    rows = await ledger_rows(f"sqlite:///{tmp_path / 'gateway.db'}")

    assert [(r["status"], r["http_status"], r["error_code"]) for r in rows] == [
        ("200", 200, None),
        ("rejected", 429, "rpm_limit_exceeded"),
    ]
    assert {r["key_id"] for r in rows} == {key["id"]}
    assert rows[1]["provider"] is None
    assert rows[1]["request_id"] == refused.headers["x-request-id"]


async def test_a_caller_reusing_a_request_id_gets_an_entry_per_request(tmp_path: Path) -> None:
    settings = ledger_settings(tmp_path)
    provider = FakeProvider()
    async with started_app(settings, Registry({provider.name: provider})) as http:
        for _ in range(3):
            answer = await http.post(
                "/v1/chat/completions", json=body(), headers={"x-request-id": "same-id"}
            )
            assert answer.status_code == 200

    rows = await ledger_rows(f"sqlite:///{tmp_path / 'gateway.db'}")

    assert [row["request_id"] for row in rows] == ["same-id"] * 3
    assert len({row["entry_id"] for row in rows}) == 3


async def test_cached_and_reasoning_tokens_are_entered_when_the_upstream_reports_them(
    tmp_path: Path,
) -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 7,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 5},
    }
    provider = FakeProvider()
    provider.completion["usage"] = usage
    async with started_app(ledger_settings(tmp_path), Registry({provider.name: provider})) as http:
        answer = await http.post("/v1/chat/completions", json=body())
    assert orjson.loads(answer.content)["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}

    (row,) = await ledger_rows(f"sqlite:///{tmp_path / 'gateway.db'}")

    assert (row["prompt_tokens"], row["completion_tokens"]) == (10, 7)
    assert (row["cached_tokens"], row["reasoning_tokens"]) == (4, 5)


async def test_a_stream_the_caller_leaves_is_entered_once_as_closed_by_the_client(
    tmp_path: Path,
) -> None:
    provider = FakeProvider(chunks=[])
    provider.chunks = FakeProvider().chunks * 20
    settings = ledger_settings(tmp_path)
    async with (
        started_app(settings, Registry({provider.name: provider})) as http,
        http.stream("POST", "/v1/chat/completions", json=body(stream=True)) as response,
    ):
        async for _ in response.aiter_bytes():
            break

    rows = await ledger_rows(f"sqlite:///{tmp_path / 'gateway.db'}")

    assert len(rows) == 1
    assert rows[0]["is_stream"] is True


async def test_with_the_ledger_off_nothing_is_journaled_or_stored(tmp_path: Path) -> None:
    settings = ledger_settings(tmp_path, usage_ledger=False)
    provider = FakeProvider()
    async with started_app(settings, Registry({provider.name: provider})) as http:
        answer = await http.post("/v1/chat/completions", json=body())
    assert answer.status_code == 200

    assert await ledger_rows(f"sqlite:///{tmp_path / 'gateway.db'}") == []
    assert not (tmp_path / "journal").exists()


async def test_an_absurd_max_tokens_is_journaled_capped_not_a_500(tmp_path: Path) -> None:
    settings = ledger_settings(tmp_path)
    provider = FakeProvider()
    async with started_app(settings, Registry({provider.name: provider})) as http:
        answer = await http.post("/v1/chat/completions", json=body(max_tokens=2**70, n=3))
    assert answer.status_code != 500

    rows = await ledger_rows(f"sqlite:///{tmp_path / 'gateway.db'}")
    assert all(row["reserved_tokens"] <= 2**31 - 1 for row in rows)


async def test_refusals_are_not_journaled_past_the_journal_s_bound(tmp_path: Path) -> None:
    settings = ledger_settings(tmp_path, usage_journal_max_bytes=1, usage_ship_interval_s=60)
    provider = FakeProvider()
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with started_app(settings, Registry({provider.name: provider})) as http:
        issued = await http.post(
            "/admin/v1/keys", json={"name": "one-rpm", "rpm_limit": 1}, headers=admin
        )
        caller = {"Authorization": f"Bearer {issued.json()['key']}"}
        first = await http.post("/v1/chat/completions", json=body(), headers=caller)
        second = await http.post("/v1/chat/completions", json=body(), headers=caller)
        third = await http.post("/v1/chat/completions", json=body(), headers=caller)

    assert first.status_code == 200  # the journal was empty: under its bound
    assert (second.status_code, third.status_code) == (429, 429)
    rows = await ledger_rows(f"sqlite:///{tmp_path / 'gateway.db'}")
    assert [row["status"] for row in rows] == ["200"]
