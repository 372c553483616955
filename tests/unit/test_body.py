"""Reading the chat body: parameter paths, content types, one 400 for many validation errors."""

from typing import Any

import pytest

from ai_gateway.api.body import check_content_type, invalid_request, param_of
from ai_gateway.errors import InvalidRequest

USER_INT_CONTENT = {"model": "m", "messages": [{"role": "user", "content": 5}]}
TOOL_WITHOUT_ID = {"model": "m", "messages": [{"role": "tool", "content": "42"}]}
TWO_MESSAGES = {"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user"}]}


@pytest.mark.parametrize(
    ("loc", "data", "expected"),
    [
        pytest.param(
            ("messages", 0, "user", "content", "str"),
            USER_INT_CONTENT,
            "messages.[0].content",
            id="union-labels-skipped",
        ),
        pytest.param(
            ("messages", 0, "user", "content", "list[ContentPart]"),
            USER_INT_CONTENT,
            "messages.[0].content",
            id="generic-union-label-skipped",
        ),
        pytest.param(
            ("messages", 0, "tool", "tool_call_id"),
            TOOL_WITHOUT_ID,
            "messages.[0].tool_call_id",
            id="missing-final-field-kept",
        ),
        pytest.param(("model",), {}, "model", id="missing-top-level-field"),
        pytest.param(("temperature",), {"temperature": "hot"}, "temperature", id="top-level"),
        pytest.param(
            ("messages", 1, "user", "content"),
            TWO_MESSAGES,
            "messages.[1].content",
            id="list-index-as-brackets",
        ),
        pytest.param(("messages", 0), {"messages": ["hi"]}, "messages.[0]", id="list-item"),
        pytest.param((), USER_INT_CONTENT, None, id="empty-location"),
        pytest.param(("header", "authorization"), None, None, id="no-data"),
    ],
)
def test_param_of_builds_the_openai_parameter_path(
    loc: tuple[int | str, ...], data: object, expected: str | None
) -> None:
    assert param_of(loc, data) == expected


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/vnd.api+json",
    ],
)
def test_check_content_type_accepts_json_and_a_missing_type(content_type: str | None) -> None:
    check_content_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded", ""],
)
def test_check_content_type_rejects_other_types_with_a_400(content_type: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_content_type(content_type)

    assert caught.value.status_code == 400
    assert caught.value.envelope() == {
        "error": {
            "message": "Content-Type must be application/json.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_content_type",
        }
    }


def error(loc: tuple[int | str, ...], msg: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": loc, "msg": msg}


def test_invalid_request_reports_each_parameter_once_and_at_most_three() -> None:
    errors = [
        error(("model",), "first model error"),
        error(("model",), "second model error"),
        error(("messages",), "bad messages"),
        error(("temperature",), "bad temperature"),
        error(("top_p",), "bad top_p"),
    ]

    exc = invalid_request(errors, {})

    assert exc.status_code == 400
    assert exc.envelope() == {
        "error": {
            "message": (
                "Invalid request: 'model': first model error; 'messages': bad messages; "
                "'temperature': bad temperature"
            ),
            "type": "invalid_request_error",
            "param": "model",
            "code": None,
        }
    }


def test_invalid_request_without_a_parameter_has_a_null_param() -> None:
    exc = invalid_request([error((), "Input should be an object")], None)

    assert exc.message == "Invalid request: Input should be an object"
    assert exc.param is None


def test_invalid_request_message_is_capped() -> None:
    exc = invalid_request([error(("model",), "x" * 2000)], {})

    assert len(exc.message) == 500
    assert exc.message.startswith("Invalid request: 'model': xxx")
