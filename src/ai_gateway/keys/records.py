"""KeyRecord and TeamRecord: stored keys and teams as the rest of the gateway sees them."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ai_gateway.keys.caller import Budget, Limits, Scope


@dataclass(frozen=True, slots=True)
class Spend:
    """A budget's current period as the admin API and CLI show it (not stored with the key:
    counted by the gateway's budget store, or summed from the usage ledger)."""

    period_start: datetime | None
    """None for a `total` budget."""
    spent_usd: float | None
    """None when the spend cannot be read right now."""
    soft_limit_reached: bool | None


@dataclass(frozen=True, slots=True)
class TeamRecord:
    """A team: its own limits and budget apply to all its keys together."""

    id: str
    name: str
    limits: Limits = field(default_factory=Limits)
    budget: Budget | None = None
    spend: Spend | None = None
    """Filled in for display only (KeyAdmin)."""
    is_disabled: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual key; its secret is known only by its digest (and the grace digest of the
    secret it replaced, until `previous_expires_at`)."""

    id: str
    name: str
    digest: bytes
    prefix: str
    team_id: str | None = None
    models: tuple[str, ...] | None = None
    limits: Limits = field(default_factory=Limits)
    budget: Budget | None = None
    spend: Spend | None = None
    """Filled in for display only (KeyAdmin)."""
    expires_at: datetime | None = None
    is_disabled: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    previous_digest: bytes | None = None
    previous_expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Membership:
    """A key with its team (if any), as the directory caches it."""

    key: KeyRecord
    team: TeamRecord | None


@dataclass(frozen=True, slots=True)
class Change:
    """A key or team was created, updated, disabled, rotated or deleted: every replica's
    directory reloads it (a team: all its keys)."""

    scope: Scope
    id: str
