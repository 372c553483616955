"""Reading the chat request body: size limit, content type, JSON, validation -> clear 4xx."""

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import Request
from pydantic import ValidationError

from ai_gateway.errors import InvalidRequest, RequestTooLarge
from ai_gateway.schemas import ChatCompletionRequest

MAX_REPORTED_ERRORS = 3
MAX_ERROR_TEXT = 500
DISCRIMINATOR_ERRORS = frozenset({"union_tag_not_found", "union_tag_invalid"})


def check_content_type(content_type: str | None) -> None:
    """A declared content type must be JSON (a missing one is read as JSON)."""
    if content_type is None:
        return
    media = content_type.partition(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise InvalidRequest("Content-Type must be application/json.", code="invalid_content_type")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_large(limit)
        parts.append(part)
    return b"".join(parts)


def too_large(limit: int) -> RequestTooLarge:
    """The 413 for a body over the limit."""
    return RequestTooLarge(f"Request body is larger than the gateway's limit of {limit} bytes.")


def parse_chat_request(raw: bytes) -> ChatCompletionRequest:
    """The validated request, or a 400 naming the offending parameter."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send a valid JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        return ChatCompletionRequest.from_body(data)
    except ValidationError as exc:
        raise invalid_request(exc.errors(include_url=False, include_input=False), data) from None


async def read_chat_request(request: Request, limit: int) -> ChatCompletionRequest:
    """Content type, size and schema checks, in that order."""
    check_content_type(request.headers.get("content-type"))
    return parse_chat_request(await read_body(request, limit))


def param_of(loc: Sequence[int | str], data: object) -> str | None:
    """OpenAI-style parameter path (`messages.[0].content`) of an error location.

    Pydantic puts union member labels into locations; walking the caller's own data tells
    real keys from labels: a key the data does not have counts only as the final, missing one.
    """
    parts: list[str] = []
    node = data
    for index, segment in enumerate(loc):
        if isinstance(segment, int) and isinstance(node, list) and segment < len(node):
            parts.append(f"[{segment}]")
            node = node[segment]
        elif isinstance(segment, str) and isinstance(node, dict):
            if segment in node:
                parts.append(segment)
                node = node[segment]
            elif index == len(loc) - 1:
                parts.append(segment)
    return ".".join(parts) or None


def location(error: Any) -> tuple[int | str, ...]:
    """The error's location; a bad or missing discriminator points at its field (`role`)."""
    loc = tuple(error["loc"])
    if error["type"] in DISCRIMINATOR_ERRORS:
        return (*loc, str(error["ctx"]["discriminator"]).strip("'"))
    return loc


def invalid_request(errors: Sequence[Any], data: object) -> InvalidRequest:
    """One 400 for a list of validation errors: the first parameter, a message for each."""
    params: dict[str | None, str] = {}
    for error in errors:
        params.setdefault(param_of(location(error), data), str(error["msg"]))
    messages = [
        f"'{param}': {msg}" if param else msg
        for param, msg in list(params.items())[:MAX_REPORTED_ERRORS]
    ]
    text = "Invalid request: " + "; ".join(messages)
    return InvalidRequest(text[:MAX_ERROR_TEXT], param=next(iter(params), None))
