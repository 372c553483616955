"""Keys and teams as aligned plain-text tables: the CLI's output unless `--json`."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

Columns = Sequence[tuple[str, str]]

KEY_COLUMNS: Final[Columns] = (
    ("ID", "id"),
    ("NAME", "name"),
    ("TEAM", "team"),
    ("PREFIX", "key_prefix"),
    ("MODELS", "models"),
    ("RPM", "rpm_limit"),
    ("TPM", "tpm_limit"),
    ("PARALLEL", "max_parallel_requests"),
    ("BUDGET", "budget"),
    ("EXPIRES", "expires_at"),
    ("DISABLED", "disabled"),
    ("LAST USED", "last_used_at"),
)
TEAM_COLUMNS: Final[Columns] = (
    ("ID", "id"),
    ("NAME", "name"),
    ("RPM", "rpm_limit"),
    ("TPM", "tpm_limit"),
    ("PARALLEL", "max_parallel_requests"),
    ("BUDGET", "budget"),
    ("DISABLED", "disabled"),
    ("CREATED", "created_at"),
)


def budget_cell(budget: dict[str, Any]) -> str:
    """A budget as `$1.23/$10 per day` (the spend first; `?` when it is not known; `!` once
    past the soft threshold)."""
    spent = budget["spent_usd"]
    per = "in total" if budget["period"] == "total" else f"per {budget['period']}"
    mark = "!" if budget["soft_limit_reached"] else ""
    used = "?" if spent is None else f"${spent:.2f}"
    return f"{used}/${budget['limit_usd']:g} {per}{mark}"


def cell(field: str, value: Any) -> str:
    """One value as text: times in UTC ISO 8601, `-` for none, `all` for every model."""
    if value is None:
        return "all" if field == "models" else "-"
    if field == "budget":
        return budget_cell(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if field.endswith("_at"):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, list):
        return ",".join(value) or "none"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def aligned(rows: Sequence[Sequence[str]]) -> str:
    """Rows as columns padded to their widest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def render(view: dict[str, Any], *, is_team: bool) -> str:
    """A list as one row per item; a deletion as a sentence; a key or team as field/value
    lines."""
    if view.get("object") == "list":
        columns = TEAM_COLUMNS if is_team else KEY_COLUMNS
        header = [title for title, _ in columns]
        rows = [[cell(f, item[f]) for _, f in columns] for item in view["data"]]
        return aligned([header, *rows])
    if view.get("deleted"):
        return f"Deleted {'team' if is_team else 'key'} {view['id']}."
    return aligned([[field, cell(field, value)] for field, value in view.items()])
