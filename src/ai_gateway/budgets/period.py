"""Budget periods in UTC: when the current one started, when it resets, and its name in the
stores' keys (a new period is a new counter, seeded from the ledger)."""

from datetime import UTC, datetime, timedelta

from ai_gateway.keys.caller import Period

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def period_start(period: Period, now: datetime) -> datetime | None:
    """The start of the period that holds `now` (None for `total`: it never started over)."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if period is Period.MONTH:
        return day.replace(day=1)
    return None


def period_end(period: Period, start: datetime | None) -> datetime | None:
    """When the period that began at `start` resets (None for `total`: never)."""
    if start is None:
        return None
    if period is Period.DAY:
        return start + timedelta(days=1)
    if period is Period.WEEK:
        return start + timedelta(weeks=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def period_label(period: Period, start: datetime | None) -> str:
    """The period's part of a counter's key: `day:20261203`, `week:20261130`, `month:202612`,
    `total`."""
    if start is None:
        return Period.TOTAL.value
    shape = "%Y%m" if period is Period.MONTH else "%Y%m%d"
    return f"{period.value}:{start.strftime(shape)}"
