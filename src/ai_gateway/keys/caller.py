"""Caller: who sent a request, what it may use and the limits and budgets it counts against."""

from dataclasses import dataclass, field
from enum import StrEnum


class Scope(StrEnum):
    """What a limit belongs to."""

    KEY = "key"
    TEAM = "team"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-minute request and token limits and a cap on requests in flight; None = no limit."""

    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None

    @property
    def is_limited(self) -> bool:
        """Whether any limit is set."""
        return self.rpm is not None or self.tpm is not None or self.parallel is not None


class Period(StrEnum):
    """What a budget covers: a UTC calendar day, an ISO week (from Monday), a calendar month,
    or all time."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    TOTAL = "total"


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending cap in USD per period (budgets/)."""

    limit_usd: float
    period: Period = Period.MONTH


@dataclass(frozen=True, slots=True)
class Subject:
    """One holder of limits and a budget: a key or a team; its counters are shared by every
    request it makes, on every replica."""

    scope: Scope
    id: str
    limits: Limits
    budget: Budget | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its key, its team, the models it may use, its limits."""

    key_id: str
    team: str | None = None
    models: frozenset[str] | None = None
    """Aliases and `<provider>/<model>` ids the key may use; None = every model."""
    subjects: tuple[Subject, ...] = field(default=())
    """The key's and the team's limits and budgets, only those that set any."""

    def may_use(self, model: str) -> bool:
        """Whether the key may call `model` (an alias or a `<provider>/<model>` id)."""
        return self.models is None or model in self.models
