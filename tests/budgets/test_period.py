"""Budget periods in UTC: starts, resets and counter names."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ai_gateway.budgets.period import period_end, period_label, period_start
from ai_gateway.keys.caller import Period

THURSDAY = datetime(2026, 12, 3, 23, 59, 59, 999_999, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "start", "end", "label"),
    [
        (
            Period.DAY,
            datetime(2026, 12, 3, tzinfo=UTC),
            datetime(2026, 12, 4, tzinfo=UTC),
            "day:20261203",
        ),
        (
            Period.WEEK,
            datetime(2026, 11, 30, tzinfo=UTC),
            datetime(2026, 12, 7, tzinfo=UTC),
            "week:20261130",
        ),
        (
            Period.MONTH,
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
            "month:202612",
        ),
        (Period.TOTAL, None, None, "total"),
    ],
)
def test_periods_are_utc_calendar_periods(
    period: Period, start: datetime | None, end: datetime | None, label: str
) -> None:
    assert period_start(period, THURSDAY) == start
    assert period_end(period, start) == end
    assert period_label(period, start) == label


def test_a_time_with_an_offset_is_placed_in_its_utc_period() -> None:
    tokyo = datetime(2026, 12, 4, 8, 0, tzinfo=timezone(timedelta(hours=9)))  # 23:00 UTC the 3rd

    assert period_start(Period.DAY, tokyo) == datetime(2026, 12, 3, tzinfo=UTC)


def test_a_week_starts_on_monday_even_across_a_year() -> None:
    friday = datetime(2027, 1, 1, 12, tzinfo=UTC)

    assert period_start(Period.WEEK, friday) == datetime(2026, 12, 28, tzinfo=UTC)


def test_the_boundary_itself_opens_the_next_period() -> None:
    midnight = datetime(2026, 12, 4, tzinfo=UTC)

    assert period_start(Period.DAY, midnight) == midnight
    assert period_start(Period.MONTH, datetime(2026, 2, 28, 23, 59, tzinfo=UTC)) == datetime(
        2026, 2, 1, tzinfo=UTC
    )
    assert period_end(Period.MONTH, datetime(2026, 1, 1, tzinfo=UTC)) == datetime(
        2026, 2, 1, tzinfo=UTC
    )
