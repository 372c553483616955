"""What the admin API and CLI accept: pydantic models of key and team changes, and their
validation errors as 400s naming the field."""

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from ai_gateway.errors import InvalidRequest
from ai_gateway.keys.tables import ID_LENGTH, NAME_LENGTH

MAX_LIMIT: Final = 2**31 - 1
"""The limit columns are 32-bit integers."""
MAX_BUDGET_USD: Final = 1_000_000.0
"""Budgets are counted in integer nano-USD, exact in Lua's doubles up to about 9 million USD:
room for a budget at this bound and what overshoots it."""
MAX_METADATA_BYTES: Final = 16 * 1024
MAX_METADATA_DEPTH: Final = 16
MAX_MODELS: Final = 1_000
MAX_GRACE_PERIOD_S: Final = 30 * 24 * 3600
DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100
MAX_ERROR_TEXT: Final = 500
TIME_FORMS: Final = "unix seconds (an integer) or an ISO 8601 date-time"


def depth(value: object) -> int:
    """How deeply arrays and objects nest in a JSON value (a scalar is 0)."""
    deepest, level = 0, [(value, 0)]
    while level:
        item, at = level.pop()
        deepest = max(deepest, at)
        if isinstance(item, dict):
            level.extend((child, at + 1) for child in item.values())
        elif isinstance(item, list):
            level.extend((child, at + 1) for child in item)
    return deepest


def bounded_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata is kept with every key and team: bounded in size and nesting."""
    if depth(value) > MAX_METADATA_DEPTH:
        raise ValueError(f"must nest at most {MAX_METADATA_DEPTH} levels deep")
    if len(orjson.dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return value


def moment_of(value: object) -> datetime:
    """Unix seconds or ISO 8601 (no offset = UTC) as an aware time."""
    if isinstance(value, datetime):  # built in code, not read from JSON
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # the CLI's `--expires-at 1767225600`
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            moment = datetime.fromisoformat(value.strip())
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise ValueError(f"must be {TIME_FORMS}")


def future_moment(value: object) -> datetime | None:
    """An expiry: None (never) or a time still to come."""
    if value is None:
        return None
    moment = moment_of(value)
    if moment <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return moment


def distinct(models: list[str]) -> list[str]:
    """Each model once, in the order given."""
    return list(dict.fromkeys(models))


def not_null(value: object) -> object:
    """A field that may be left out of an update but not set to null."""
    if value is None:
        raise ValueError("may not be null")
    return value


Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_LENGTH)
]
Reference = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_LENGTH)
]
Limit = Annotated[int, Field(gt=0, le=MAX_LIMIT)]
BudgetAmount = Annotated[float, Field(gt=0, le=MAX_BUDGET_USD, allow_inf_nan=False)]
BudgetPeriod = Literal["day", "week", "month", "total"]
Metadata = Annotated[dict[str, Any], AfterValidator(bounded_metadata)]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=NAME_LENGTH)]
Models = Annotated[list[ModelName], Field(max_length=MAX_MODELS), AfterValidator(distinct)]
Expiry = Annotated[datetime | None, BeforeValidator(future_moment)]
NotNull = BeforeValidator(not_null)


class Payload(BaseModel):
    """A JSON body: unknown fields refused, no type coercion ("5" is not 5)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def needs_amount(period: str | None, info: ValidationInfo) -> str | None:
    """A new key's or team's `budget_period` comes with its `budget_usd`."""
    if period is not None and info.data.get("budget_usd") is None:
        raise ValueError("needs 'budget_usd' (the amount to spend per period)")
    return period


class TeamCreate(Payload):
    """A new team; a budget without `budget_period` is per month."""

    name: Name
    rpm_limit: Limit | None = None
    tpm_limit: Limit | None = None
    max_parallel_requests: Limit | None = None
    budget_usd: BudgetAmount | None = None
    budget_period: BudgetPeriod | None = None
    metadata: Metadata | None = None

    _period = field_validator("budget_period")(needs_amount)


class TeamUpdate(Payload):
    """Changes to a team: fields left out stay, an explicit null clears."""

    name: Annotated[Name | None, NotNull] = None
    rpm_limit: Limit | None = None
    tpm_limit: Limit | None = None
    max_parallel_requests: Limit | None = None
    budget_usd: BudgetAmount | None = None
    budget_period: Annotated[BudgetPeriod | None, NotNull] = None
    metadata: Metadata | None = None
    disabled: Annotated[bool | None, NotNull] = None


class KeyCreate(Payload):
    """A new key; `team` is a team's id or name; `models` null = every model; a budget without
    `budget_period` is per month."""

    name: Name
    team: Reference | None = None
    models: Models | None = None
    rpm_limit: Limit | None = None
    tpm_limit: Limit | None = None
    max_parallel_requests: Limit | None = None
    budget_usd: BudgetAmount | None = None
    budget_period: BudgetPeriod | None = None
    expires_at: Expiry = None
    metadata: Metadata | None = None

    _period = field_validator("budget_period")(needs_amount)


class KeyUpdate(Payload):
    """Changes to a key: fields left out stay, an explicit null clears."""

    name: Annotated[Name | None, NotNull] = None
    team: Reference | None = None
    models: Models | None = None
    rpm_limit: Limit | None = None
    tpm_limit: Limit | None = None
    max_parallel_requests: Limit | None = None
    budget_usd: BudgetAmount | None = None
    budget_period: Annotated[BudgetPeriod | None, NotNull] = None
    expires_at: Expiry = None
    metadata: Metadata | None = None
    disabled: Annotated[bool | None, NotNull] = None


class KeyRotate(Payload):
    """A new secret; the replaced one keeps working for `grace_period_s` seconds."""

    grace_period_s: Annotated[int, Field(ge=0, le=MAX_GRACE_PERIOD_S)] = 0


class PageQuery(BaseModel):
    """`?limit=&after=` of a list (query strings: "20" is read as 20)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE
    after: Annotated[str, StringConstraints(min_length=1, max_length=ID_LENGTH)] | None = None


class KeyQuery(PageQuery):
    """A page of keys, maybe only one team's (its id or name)."""

    team: Reference | None = None


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], payload: object) -> Model:
    """The payload as `model`, or a 400 naming the first offending field."""
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise invalid(error.errors(include_url=False)[0]) from None


def param_of(location: tuple[int | str, ...]) -> str | None:
    """OpenAI's spelling of a field's path: `models.[2]`."""
    parts = [f"[{part}]" if isinstance(part, int) else part for part in location]
    return ".".join(parts) or None


def invalid(error: ErrorDetails) -> InvalidRequest:
    """One pydantic error as the 400 the caller sees."""
    param = param_of(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: '{param}'."
    elif kind == "missing":
        message = f"Missing required parameter: '{param}'."
    elif kind == "model_type":
        message = "The request body must be a JSON object."
    else:
        reason = error["msg"].removeprefix("Value error, ")
        message = f"Invalid '{param}': {reason[:1].lower()}{reason[1:]}."
    return InvalidRequest(message[:MAX_ERROR_TEXT], param=param)
