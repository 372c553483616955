"""Reading the chat body: its bytes and their limit, nesting, parameter paths, content types,
one 400 per invalid body; the head's fields the dispatch reads."""

from typing import Any

import orjson
import pytest
from starlette.requests import ClientDisconnect

from ai_gateway.api.body import (
    check_content_type,
    check_depth,
    invalid_request,
    is_nested_deeper,
    param_of,
    parse_chat_request,
    read_body,
)
from ai_gateway.api.dispatch import head_fields
from ai_gateway.errors import InvalidRequest, RequestTooLarge
from ai_gateway.schemas import as_python

LIMIT = 64


def nested(levels: int) -> bytes:
    """A valid chat body with an unknown field nested `levels` deep inside it."""
    value = "[" * (levels - 1) + "1" + "]" * (levels - 1)
    return (
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"deep":' + value.encode() + b"}"
    )


def brackets(depth: int) -> bytes:
    """`depth` nested arrays."""
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"{}", 1),
        (b'{"a": 1}', 1),
        (b'{"a": [1, {"b": "]]]"}]}', 3),
        (b'{"a": "\\\\"}', 1),
        (b'{"a": "\\"[[["}', 1),
        (b'{"a": "x\\\\\\"[[", "b": [[]]}', 3),
        (b'[{"a": {}}, [[{}]]]', 4),
        (b"[[], [[]], [[[]]], []]", 4),
        (brackets(5) * 3 + brackets(9), 9),
        (brackets(63) + brackets(64), 64),
        (brackets(2_000_000), 2_000_000),
    ],
)
def test_nesting_counts_levels_outside_strings(text: bytes, depth: int) -> None:
    for limit in (1, 2, 3, 8, 64):
        assert is_nested_deeper(text, limit) is (depth > limit), limit


def test_a_body_of_many_deep_groups_is_judged_in_bounded_time() -> None:
    body = brackets(64) * (4 * 1024 * 1024 // 128)

    assert not is_nested_deeper(body, 64)
    assert is_nested_deeper(body + brackets(65), 64)


@pytest.mark.parametrize("text", [b"[}", b'{"a": [}', b"[[1]", b"[" * 70 + b"}" * 70])
def test_brackets_that_do_not_pair_up_are_invalid_json_not_too_deep(text: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(text, max_depth=LIMIT)

    assert caught.value.code == "invalid_json"


def test_a_body_at_the_depth_limit_is_accepted() -> None:
    request = parse_chat_request(nested(LIMIT), max_depth=LIMIT)

    assert as_python(request.params["deep"]) is not None


@pytest.mark.parametrize("levels", [LIMIT + 1, 300, 5000])
def test_a_body_nested_too_deep_is_a_400_before_parsing(levels: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(nested(levels), max_depth=LIMIT)

    assert caught.value.status_code == 400
    assert caught.value.code == "nesting_too_deep"
    assert str(LIMIT) in caught.value.message


def test_the_highest_depth_limit_still_rejects_what_the_parser_cannot_read() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(nested(5000), max_depth=256)

    assert caught.value.code == "nesting_too_deep"


def test_check_depth_ignores_brackets_inside_strings() -> None:
    check_depth(orjson.dumps({"text": "[" * 1000}), LIMIT)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.messages[0].content", "messages.[0].content"),
        ("$.messages[12].content[3].text", "messages.[12].content.[3].text"),
        ("$.temperature", "temperature"),
        ("$", None),
        ("", None),
    ],
)
def test_param_of_builds_the_openai_parameter_path(path: str, expected: str | None) -> None:
    assert param_of(path) == expected


@pytest.mark.parametrize(
    ("text", "param", "message"),
    [
        (
            "Expected `str | array`, got `int` - at `$.messages[0].content`",
            "messages.[0].content",
            "Invalid request: 'messages.[0].content': Expected `str | array`, got `int`",
        ),
        (
            "Object missing required field `model`",
            "model",
            "Invalid request: 'model': Object missing required field `model`",
        ),
        (
            "Object missing required field `tool_call_id` - at `$.messages[0]`",
            "messages.[0].tool_call_id",
            "Invalid request: 'messages.[0].tool_call_id': "
            "Object missing required field `tool_call_id`",
        ),
        ("Some top-level problem", None, "Invalid request: Some top-level problem"),
    ],
)
def test_invalid_request_names_the_parameter(text: str, param: str | None, message: str) -> None:
    error = invalid_request(text)

    assert (error.param, error.message, error.code) == (param, message, None)


def test_a_body_that_is_not_an_object_is_invalid_json() -> None:
    error = invalid_request("Expected `object`, got `array`")

    assert (error.param, error.code) == (None, "invalid_json")


def test_invalid_request_message_is_capped() -> None:
    error = invalid_request("x" * 2000 + " - at `$.temperature`")

    assert len(error.message) == 500


@pytest.mark.parametrize(
    "model", ["", "cerebras/ok\u200b", "ok\u0001", "模型", "m" * 257, "tab\there"]
)
def test_model_ids_must_be_printable_ascii_and_bounded(model: str) -> None:
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]})

    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(body, max_depth=LIMIT)

    assert (caught.value.status_code, caught.value.param) == (400, "model")


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


def receiving(*messages: dict[str, Any]) -> Any:
    """An ASGI `receive` that gives `messages` in order."""
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


def part(body: bytes, *, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


@pytest.mark.anyio
async def test_a_body_is_read_whole_from_its_parts() -> None:
    receive = receiving(part(b"ab", more=True), part(b"", more=True), part(b"c", more=False))

    assert await read_body(receive, None, limit=3) == b"abc"


@pytest.mark.anyio
@pytest.mark.parametrize("declared", [None, "2", "not a number"])
async def test_a_body_over_the_limit_is_a_413_as_soon_as_it_is_known(
    declared: str | None,
) -> None:
    receive = receiving(part(b"ab", more=True), part(b"cd", more=True))

    with pytest.raises(RequestTooLarge):
        await read_body(receive, declared, limit=3)


@pytest.mark.anyio
async def test_a_declared_length_over_the_limit_is_a_413_before_any_read() -> None:
    with pytest.raises(RequestTooLarge):
        await read_body(receiving(), "4", limit=3)  # (nothing to receive: none is read)


@pytest.mark.anyio
async def test_a_caller_who_leaves_while_sending_is_a_client_disconnect() -> None:
    receive = receiving(part(b"ab", more=True), {"type": "http.disconnect"})

    with pytest.raises(ClientDisconnect):
        await read_body(receive, None, limit=10)


def test_the_head_s_fields_are_each_one_s_first_value_and_only_those_read() -> None:
    headers = [
        (b"host", b"x"),
        (b"authorization", b"Bearer one"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer two"),
    ]

    assert head_fields(headers) == {
        b"authorization": "Bearer one",
        b"content-type": "application/json",
    }
