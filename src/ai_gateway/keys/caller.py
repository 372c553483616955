"""Caller: who sent a request, what it may use and the limits it counts against."""

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


@dataclass(frozen=True, slots=True)
class Subject:
    """One holder of limits: a key or a team; its counters are shared by every request it
    makes, on every replica."""

    scope: Scope
    id: str
    limits: Limits


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its key, its team, the models it may use, its limits."""

    key_id: str
    team: str | None = None
    models: frozenset[str] | None = None
    """Aliases and `<provider>/<model>` ids the key may use; None = every model."""
    subjects: tuple[Subject, ...] = field(default=())
    """The key's and the team's limits, only those that set any."""

    def may_use(self, model: str) -> bool:
        """Whether the key may call `model` (an alias or a `<provider>/<model>` id)."""
        return self.models is None or model in self.models
