"""What the admin API and CLI accept: every refusal is a 400 naming the field, never a 500."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from ai_gateway.errors import InvalidRequest
from ai_gateway.keys.payloads import (
    KeyCreate,
    KeyQuery,
    KeyRotate,
    KeyUpdate,
    PageQuery,
    TeamCreate,
    TeamUpdate,
    validated,
)
from tests.keys.conftest import FUTURE_YEAR


def refusal(model: type[BaseModel], payload: object) -> dict[str, Any]:
    with pytest.raises(InvalidRequest) as caught:
        validated(model, payload)
    assert caught.value.status_code == 400
    return caught.value.envelope()["error"]  # type: ignore[no-any-return]


def error(message: str, param: str | None) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": None}


@pytest.mark.parametrize(
    ("model", "payload", "expected"),
    [
        (KeyCreate, {}, error("Missing required parameter: 'name'.", "name")),
        (
            KeyCreate,
            {"name": "ci", "owner": "me"},
            error("Unrecognized request argument supplied: 'owner'.", "owner"),
        ),
        (
            KeyCreate,
            {"name": "ci", "rpm_limit": 0},
            error("Invalid 'rpm_limit': input should be greater than 0.", "rpm_limit"),
        ),
        (
            KeyCreate,
            {"name": "ci", "tpm_limit": "5"},
            error("Invalid 'tpm_limit': input should be a valid integer.", "tpm_limit"),
        ),
        (
            KeyCreate,
            {"name": "ci", "max_parallel_requests": 2**31},
            error(
                "Invalid 'max_parallel_requests': input should be less than or equal to "
                "2147483647.",
                "max_parallel_requests",
            ),
        ),
        (
            KeyCreate,
            {"name": "  "},
            error("Invalid 'name': string should have at least 1 character.", "name"),
        ),
        (
            KeyCreate,
            {"name": "ci", "models": ["a", 7]},
            error("Invalid 'models.[1]': input should be a valid string.", "models.[1]"),
        ),
        (
            KeyCreate,
            {"name": "ci", "models": "a,b"},
            error("Invalid 'models': input should be a valid list.", "models"),
        ),
        (
            KeyCreate,
            {"name": "ci", "expires_at": 1_000_000},
            error("Invalid 'expires_at': must be in the future.", "expires_at"),
        ),
        (
            KeyCreate,
            {"name": "ci", "expires_at": "next week"},
            error(
                "Invalid 'expires_at': must be unix seconds (an integer) or an ISO 8601 date-time.",
                "expires_at",
            ),
        ),
        (
            KeyCreate,
            {"name": "ci", "expires_at": 1.5e9},
            error(
                "Invalid 'expires_at': must be unix seconds (an integer) or an ISO 8601 date-time.",
                "expires_at",
            ),
        ),
        (
            KeyCreate,
            {"name": "ci", "expires_at": 10**20},
            error(
                "Invalid 'expires_at': must be unix seconds (an integer) or an ISO 8601 date-time.",
                "expires_at",
            ),
        ),
        (
            KeyCreate,
            {"name": "ci", "metadata": ["not", "an", "object"]},
            error("Invalid 'metadata': input should be a valid dictionary.", "metadata"),
        ),
        (
            KeyCreate,
            {"name": "ci", "metadata": {"blob": "x" * 16_384}},
            error("Invalid 'metadata': must be at most 16384 bytes as JSON.", "metadata"),
        ),
        (
            TeamCreate,
            {"name": "eng", "metadata": {"a": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}},
            error("Invalid 'metadata': must nest at most 16 levels deep.", "metadata"),
        ),
        (KeyUpdate, {"name": None}, error("Invalid 'name': may not be null.", "name")),
        (
            TeamUpdate,
            {"disabled": None},
            error("Invalid 'disabled': may not be null.", "disabled"),
        ),
        (
            TeamUpdate,
            {"disabled": "yes"},
            error("Invalid 'disabled': input should be a valid boolean.", "disabled"),
        ),
        (
            KeyRotate,
            {"grace_period_s": 30 * 86_400 + 1},
            error(
                "Invalid 'grace_period_s': input should be less than or equal to 2592000.",
                "grace_period_s",
            ),
        ),
        (
            PageQuery,
            {"limit": "101"},
            error("Invalid 'limit': input should be less than or equal to 100.", "limit"),
        ),
        (
            PageQuery,
            {"limit": "many"},
            error(
                "Invalid 'limit': input should be a valid integer, unable to parse string as "
                "an integer.",
                "limit",
            ),
        ),
        (KeyCreate, [], error("The request body must be a JSON object.", None)),
    ],
)
def test_a_bad_payload_is_a_400_naming_its_field(
    model: type[BaseModel], payload: object, expected: dict[str, Any]
) -> None:
    assert refusal(model, payload) == expected


IN_FIVE_YEARS = datetime(FUTURE_YEAR, 3, 17, 17, 46, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (int(IN_FIVE_YEARS.timestamp()), IN_FIVE_YEARS),
        (str(int(IN_FIVE_YEARS.timestamp())), IN_FIVE_YEARS),
        (f"{FUTURE_YEAR}-01-02", datetime(FUTURE_YEAR, 1, 2, tzinfo=UTC)),
        (f"{FUTURE_YEAR}-01-02T03:04:05Z", datetime(FUTURE_YEAR, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (f"{FUTURE_YEAR}-01-02T03:04:05+02:00", datetime(FUTURE_YEAR, 1, 2, 1, 4, 5, tzinfo=UTC)),
        (None, None),
    ],
)
def test_expiry_is_unix_seconds_or_iso_8601(given: object, expected: datetime | None) -> None:
    request = validated(KeyCreate, {"name": "ci", "expires_at": given})

    assert request.expires_at == expected


def test_models_are_kept_once_each_in_order() -> None:
    request = validated(KeyCreate, {"name": "ci", "models": ["b", "a", "b"]})

    assert request.models == ["b", "a"]


def test_an_update_tells_left_out_from_null() -> None:
    request = validated(KeyUpdate, {"rpm_limit": None, "team": None})

    assert request.model_dump(exclude_unset=True) == {"rpm_limit": None, "team": None}


def test_list_queries_read_numbers_from_query_strings() -> None:
    assert validated(KeyQuery, {"limit": "5", "team": "eng"}) == KeyQuery(limit=5, team="eng")
    assert validated(PageQuery, {}) == PageQuery(limit=20, after=None)


def test_an_expiry_a_moment_away_is_accepted() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=5)

    assert validated(KeyUpdate, {"expires_at": soon.isoformat()}).expires_at == soon
