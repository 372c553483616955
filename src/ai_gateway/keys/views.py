"""The public JSON of keys and teams (the admin API's bodies and the CLI's `--json`)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

from ai_gateway.keys.caller import Budget
from ai_gateway.keys.records import KeyRecord, Spend, TeamRecord

KEY_OBJECT: Final = "gateway.key"
TEAM_OBJECT: Final = "gateway.team"

Item = TypeVar("Item", KeyRecord, TeamRecord)


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    """One page of a list, and whether more follow its last item."""

    items: Sequence[Item]
    has_more: bool


def unix(moment: datetime | None) -> int | None:
    """A time as whole unix seconds."""
    return None if moment is None else int(moment.timestamp())


def budget_view(budget: Budget | None, spend: Spend | None) -> dict[str, Any] | None:
    """A budget and its current period: `period_start` in unix seconds (null for `total`),
    `spent_usd` and `soft_limit_reached` (null when the spend is not known)."""
    if budget is None:
        return None
    return {
        "limit_usd": budget.limit_usd,
        "period": budget.period.value,
        "period_start": unix(spend.period_start) if spend else None,
        "spent_usd": spend.spent_usd if spend else None,
        "soft_limit_reached": spend.soft_limit_reached if spend else None,
    }


def key_view(key: KeyRecord, *, secret: str | None = None) -> dict[str, Any]:
    """A key as the API shows it; with `secret` only right after create and rotate."""
    view: dict[str, Any] = {
        "id": key.id,
        "object": KEY_OBJECT,
        "name": key.name,
        "team": key.team_id,
        "key_prefix": key.prefix,
        "models": None if key.models is None else list(key.models),
        "rpm_limit": key.limits.rpm,
        "tpm_limit": key.limits.tpm,
        "max_parallel_requests": key.limits.parallel,
        "budget": budget_view(key.budget, key.spend),
        "expires_at": unix(key.expires_at),
        "disabled": key.is_disabled,
        "metadata": key.metadata,
        "created_at": unix(key.created_at),
        "updated_at": unix(key.updated_at),
        "last_used_at": unix(key.last_used_at),
    }
    if secret is not None:
        view["key"] = secret
    return view


def team_view(team: TeamRecord) -> dict[str, Any]:
    """A team as the API shows it."""
    return {
        "id": team.id,
        "object": TEAM_OBJECT,
        "name": team.name,
        "rpm_limit": team.limits.rpm,
        "tpm_limit": team.limits.tpm,
        "max_parallel_requests": team.limits.parallel,
        "budget": budget_view(team.budget, team.spend),
        "disabled": team.is_disabled,
        "metadata": team.metadata,
        "created_at": unix(team.created_at),
        "updated_at": unix(team.updated_at),
    }


def page_view(page: Page[Item], render: Callable[[Item], dict[str, Any]]) -> dict[str, Any]:
    """OpenAI's list shape; `last_id` is the next page's `after`."""
    return {
        "object": "list",
        "data": [render(item) for item in page.items],
        "first_id": page.items[0].id if page.items else None,
        "last_id": page.items[-1].id if page.items else None,
        "has_more": page.has_more,
    }


def deleted_view(object_id: str, kind: str) -> dict[str, Any]:
    """The answer to a delete."""
    return {"id": object_id, "object": kind, "deleted": True}
