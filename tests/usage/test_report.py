"""UsageReport over real databases (SQLite and PostgreSQL): totals per group and the entries
page by page, and the parsing of its query parameters."""

from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ai_gateway.db.migrations import upgrade
from ai_gateway.errors import InvalidRequest
from ai_gateway.usage.report import (
    UsageReport,
    record_query,
    usage_query,
    window_start,
)
from tests.db.databases import KINDS, fresh_database, opened
from tests.usage.report_rows import entry, insert_rows, known_rows

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
NEW_YORK = timezone(timedelta(hours=-5))
ZERO = {
    "errors": 0,
    "rejections": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "total_tokens": 0,
    "cached_tokens": 0,
    "reasoning_tokens": 0,
    "cost_usd": 0.0,
    "unpriced_requests": 0,
}
KEY_A = {
    **ZERO,
    "requests": 3,
    "errors": 1,
    "prompt_tokens": 15,
    "completion_tokens": 25,
    "total_tokens": 40,
    "cached_tokens": 2,
    "reasoning_tokens": 3,
    "cost_usd": 0.0035,
    "avg_latency_ms": 30.0,
}
KEY_B = {**ZERO, "requests": 2, "errors": 1, "rejections": 1, "avg_latency_ms": 70.0}
KEY_C = {
    **ZERO,
    "requests": 1,
    "prompt_tokens": 7,
    "completion_tokens": 8,
    "total_tokens": 15,
    "unpriced_requests": 1,
    "avg_latency_ms": 10.0,
}
WEEK_TOTAL = {
    "requests": 6,
    "errors": 2,
    "rejections": 1,
    "prompt_tokens": 22,
    "completion_tokens": 33,
    "total_tokens": 55,
    "cached_tokens": 2,
    "reasoning_tokens": 3,
    "cost_usd": 0.0035,
    "unpriced_requests": 1,
    "avg_latency_ms": 34.0,
}


@pytest.fixture(params=KINDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty database of each kind."""
    async with fresh_database(request.param, tmp_path) as url, opened(url) as opened_engine:
        await upgrade(opened_engine)
        yield opened_engine


@pytest.fixture
async def report(engine: AsyncEngine) -> UsageReport:
    """The report over the known rows."""
    await insert_rows(engine, known_rows())
    return UsageReport(engine)


async def summary(report: UsageReport, **params: str) -> dict[str, Any]:
    return await report.summary(usage_query(params))


async def test_totals_per_key_most_spent_first(report: UsageReport) -> None:
    answer = await summary(report, by="key", since="7d")

    assert answer["object"] == "list"
    assert answer["by"] == "key"
    assert answer["data"] == [
        {"key_id": "key_a", **KEY_A},
        {"key_id": "key_b", **KEY_B},
        {"key_id": "key_c", **KEY_C},
    ]
    assert answer["total"] == WEEK_TOTAL
    assert answer["has_more"] is False


async def test_a_longer_window_takes_older_entries(report: UsageReport) -> None:
    answer = await summary(report, by="key", since="30d")

    assert answer["data"][0]["key_id"] == "key_a"
    assert answer["data"][0]["requests"] == 4
    assert answer["data"][0]["cost_usd"] == 1.0035
    assert answer["total"]["requests"] == 7


async def test_totals_per_team_and_per_model(report: UsageReport) -> None:
    teams = await summary(report, by="team")
    models = await summary(report, by="model")

    assert [(row["team"], row["requests"], row["cost_usd"]) for row in teams["data"]] == [
        ("team_x", 3, 0.0035),
        (None, 2, 0.0),
        ("team_y", 1, 0.0),
    ]
    assert [(row["provider"], row["model"], row["requests"]) for row in models["data"]] == [
        ("cerebras", "gpt-oss-120b", 3),
        ("cerebras", "llama3.1-8b", 1),
        ("openai", "gpt-4.1", 1),
        (None, None, 1),
    ]
    assert models["data"][1]["unpriced_requests"] == 1


async def test_totals_per_status_most_frequent_first(report: UsageReport) -> None:
    answer = await summary(report, by="status")

    assert [(row["status"], row["error_code"], row["requests"]) for row in answer["data"]] == [
        ("200", None, 3),
        ("502", "upstream_error", 1),
        ("interrupted", None, 1),
        ("rejected", "rate_limit_exceeded", 1),
    ]
    assert [row["errors"] for row in answer["data"]] == [0, 1, 1, 0]
    assert [row["rejections"] for row in answer["data"]] == [0, 0, 0, 1]


def expected_buckets(rows: list[dict[str, Any]], start: datetime, form: str) -> list[Any]:
    """(bucket, requests, total tokens) per UTC bucket, computed here from the rows."""
    counts: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        if row["created_at"] >= start:
            figures = counts[row["created_at"].astimezone(UTC).strftime(form)]
            figures[0] += 1
            figures[1] += (row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0)
    return [(bucket, *figures) for bucket, figures in sorted(counts.items())]


@pytest.mark.parametrize(
    ("by", "since", "form"),
    [("day", timedelta(days=7), "%Y-%m-%d"), ("hour", timedelta(hours=24), "%Y-%m-%dT%H:00Z")],
)
async def test_totals_per_utc_day_and_hour_in_time_order(
    engine: AsyncEngine, by: str, since: timedelta, form: str
) -> None:
    # Entries either side of midnight UTC, written with other offsets: the bucket is UTC's.
    evening = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = [
        *known_rows(),
        entry(evening - timedelta(minutes=1), prompt_tokens=1, completion_tokens=1),
        entry(evening + timedelta(minutes=1), prompt_tokens=2, completion_tokens=2),
        entry((evening + timedelta(minutes=2)).astimezone(NEW_YORK), prompt_tokens=4),
    ]
    await insert_rows(engine, rows)
    start = datetime.now(UTC) - since

    answer = await UsageReport(engine).summary(usage_query({"by": by, "since": start.isoformat()}))

    found = [(row[by], row["requests"], row["total_tokens"]) for row in answer["data"]]
    assert found == expected_buckets(rows, start, form)
    assert len(found) >= 2


async def test_group_limit_and_has_more(report: UsageReport) -> None:
    answer = await summary(report, by="key", limit="2")

    assert [row["key_id"] for row in answer["data"]] == ["key_a", "key_b"]
    assert answer["has_more"] is True
    assert answer["total"] == WEEK_TOTAL


async def test_time_buckets_are_never_cut(report: UsageReport) -> None:
    answer = await summary(report, by="day", limit="1")

    days = [row["day"] for row in answer["data"]]
    assert len(days) >= 2  # (two or three: the known rows' days depend on the time of day)
    assert days == sorted(days)
    assert sum(row["requests"] for row in answer["data"]) == WEEK_TOTAL["requests"]
    assert answer["has_more"] is False
    assert answer["total"] == WEEK_TOTAL


async def test_an_empty_window_has_zero_totals(engine: AsyncEngine) -> None:
    answer = await UsageReport(engine).summary(usage_query({"by": "model"}))

    assert answer["data"] == []
    assert answer["total"] == {**ZERO, "requests": 0, "avg_latency_ms": None}


async def records(report: UsageReport, **params: str) -> dict[str, Any]:
    return await report.records(record_query(params))


async def test_records_newest_first_with_their_figures(report: UsageReport) -> None:
    answer = await records(report)

    assert answer["object"] == "list"
    assert answer["has_more"] is False
    assert answer["next_after"] is None
    times = [row["created_at"] for row in answer["data"]]
    assert times == sorted(times, reverse=True)
    assert len(times) == 6
    newest = answer["data"][0]
    assert newest["status"] == "rejected"
    assert newest["object"] == "gateway.usage_record"
    assert newest["id"].startswith("use_")
    assert newest["request_id"].startswith("req_")
    first_ok = answer["data"][1]
    assert {k: first_ok[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")} == {
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "total_tokens": 30,
    }
    assert newest["total_tokens"] is None


async def test_records_page_by_page(engine: AsyncEngine) -> None:
    moment = datetime.now(UTC) - timedelta(minutes=1)
    # Five entries in the same microsecond: the entry id orders them.
    rows = [entry(moment, entry_id=f"use_{n:02d}") for n in range(5)]
    await insert_rows(engine, rows)
    report = UsageReport(engine)

    seen: list[str] = []
    after: dict[str, str] = {}
    while True:
        page = await report.records(record_query({"limit": "2", **after}))
        seen += [row["id"] for row in page["data"]]
        if not page["has_more"]:
            break
        after = {"after": page["next_after"]}

    assert seen == ["use_04", "use_03", "use_02", "use_01", "use_00"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"key_id": "key_b"}, [("key_b", "rejected"), ("key_b", "502")]),
        ({"team": "team_y"}, [("key_c", "200")]),
        ({"model": "gpt-4.1"}, [("key_b", "502")]),
        ({"status": "interrupted"}, [("key_a", "interrupted")]),
        ({"outcome": "rejected"}, [("key_b", "rejected")]),
        ({"outcome": "error"}, [("key_b", "502"), ("key_a", "interrupted")]),
        (
            {"outcome": "failed"},
            [("key_b", "rejected"), ("key_b", "502"), ("key_a", "interrupted")],
        ),
        ({"outcome": "ok", "key_id": "key_a"}, [("key_a", "200"), ("key_a", "200")]),
    ],
)
async def test_records_filtered(
    report: UsageReport, params: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    answer = await records(report, **params)

    assert [(row["key_id"], row["status"]) for row in answer["data"]] == expected


async def test_records_after_an_unknown_entry_are_a_400(report: UsageReport) -> None:
    with pytest.raises(InvalidRequest) as raised:
        await records(report, after="use_missing")

    assert raised.value.param == "after"
    assert raised.value.status_code == 400


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("24h", NOW - timedelta(hours=24)),
        (" 30m ", NOW - timedelta(minutes=30)),
        ("400d", NOW - timedelta(days=400)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T10:30:00", datetime(2026, 12, 1, 10, 30, tzinfo=UTC)),
        ("2026-12-01T10:30:00+02:00", datetime(2026, 12, 1, 8, 30, tzinfo=UTC)),
        ("2026-12-01T10:30:00Z", datetime(2026, 12, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_window_start_forms(text: str, expected: datetime) -> None:
    assert window_start(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("7w", "must be a duration"),
        ("", "must be a duration"),
        ("-1d", "must be a duration"),
        ("1.5d", "must be a duration"),
        ("9999999d", "must be a duration"),
        ("401d", "at most 400 days"),
        ("2020-01-01", "at most 400 days"),
        ("yesterday", "must be a duration"),
    ],
)
def test_window_start_refusals(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        window_start(text, now=NOW)


def test_window_start_takes_only_text() -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        window_start(7, now=NOW)


@pytest.mark.parametrize(
    ("params", "param", "message"),
    [
        ({"since": "1y"}, "since", "Invalid 'since': must be a duration such as 7d"),
        ({"since": "500d"}, "since", "Invalid 'since': may reach back at most 400 days."),
        ({"by": "week"}, "by", "Invalid 'by': input should be 'key', 'team'"),
        ({"by": "hour", "since": "32d"}, "since", "Invalid 'since': by=hour may reach back"),
        ({"limit": "0"}, "limit", "Invalid 'limit'"),
        ({"limit": "1001"}, "limit", "Invalid 'limit'"),
        ({"sort": "cost"}, "sort", "Unrecognized request argument supplied: 'sort'."),
    ],
)
def test_bad_totals_parameters_are_400s(params: dict[str, str], param: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        usage_query(params)

    assert raised.value.param == param
    assert raised.value.message.startswith(message)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"outcome": "maybe"}, "outcome"),
        ({"after": "x" * 41}, "after"),
        ({"status": "s" * 17}, "status"),
        ({"since": "tomorrow"}, "since"),
    ],
)
def test_bad_record_parameters_are_400s(params: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        record_query(params)

    assert raised.value.param == param


def test_defaults_are_a_week_by_day() -> None:
    query = usage_query({})

    assert query.by == "day"
    assert query.limit == 100
    assert abs(datetime.now(UTC) - timedelta(days=7) - query.since) < timedelta(seconds=5)
    assert record_query({}).limit == 100
