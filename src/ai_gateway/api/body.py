"""Reading the chat request body: size limit, content type, nesting, JSON, validation -> 4xx."""

import re
from functools import cache

import msgspec
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from ai_gateway.errors import InvalidRequest, RequestTooLarge
from ai_gateway.schemas import ChatCompletionRequest

MAX_ERROR_TEXT = 500
MISSING_FIELD = re.compile(r"Object missing required field `(.+)`")
# Brackets of both kinds as one kind (nesting is all that is counted), quotes kept, the rest out.
SQUARE = bytes.maketrans(b"{}", b"[]")
NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
STRING = re.compile(rb'"[^"]*"')
# Bodies are rarely nested more than a few levels: two plain passes empty most of them.
CHEAP_PASSES = 2


def check_content_type(content_type: str | None) -> None:
    """A declared content type must be JSON (a missing one is read as JSON)."""
    if content_type is None:
        return
    media = content_type.partition(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise InvalidRequest("Content-Type must be application/json.", code="invalid_content_type")


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed `limit` bytes: at once
    when its `Content-Length` (`declared`) says so. A caller that leaves while sending it is a
    ClientDisconnect."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        part: bytes = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise too_large(limit)
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


def too_large(limit: int) -> RequestTooLarge:
    """The 413 for a body over the limit."""
    return RequestTooLarge(f"Request body is larger than the gateway's limit of {limit} bytes.")


def structure(raw: bytes) -> bytes:
    """The JSON text's brackets outside strings, all of one kind (nesting is all that counts):
    escaped quotes out, everything but brackets and quotes out, then the strings out."""
    if b'\\"' in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = raw.translate(SQUARE, NOT_STRUCTURE).replace(b'""', b"")
    return STRING.sub(b"", text) if b'"' in text else text


@cache
def balanced(levels: int) -> re.Pattern[bytes]:
    """Brackets nested at most `levels` deep, as a regular expression: a regular language for a
    bounded depth, and with possessive repeats the match never backtracks (linear time)."""
    pattern = rb"\[\]"
    for _ in range(levels - 1):
        pattern = rb"\[(?:" + pattern + rb")*+\]"
    return re.compile(rb"(?:" + pattern + rb")*+")


def is_nested_deeper(raw: bytes, limit: int) -> bool:
    """Whether the text nests arrays and objects deeper than `limit` (or its brackets do not
    pair up), in C-speed passes over the bytes, before any parsing: a run of `limit + 1`
    openings proves it at once; two passes remove the innermost levels (most bodies are then
    empty); a bounded-depth pattern checks what is left."""
    text = structure(raw)
    if b"[" * (limit + 1) in text:
        return True
    passes = min(CHEAP_PASSES, limit - 1)
    for _ in range(passes):
        text = text.replace(b"[]", b"")
    return bool(text) and balanced(limit - passes).fullmatch(text) is None


def check_depth(raw: bytes, limit: int) -> None:
    """A 400 for a body nested deeper than `limit`, before any other work on it (brackets that
    do not pair up are the JSON parser's to report)."""
    if not is_nested_deeper(raw, limit):
        return
    try:
        msgspec.json.decode(raw, type=msgspec.Raw)
    except msgspec.DecodeError:
        raise invalid_json() from None
    except RecursionError:  # the parser's own limit: deeper still
        pass
    raise too_deep(limit)


def too_deep(limit: int) -> InvalidRequest:
    """The 400 for a body nested deeper than `limit`."""
    return InvalidRequest(
        f"The request body is nested more than {limit} levels deep.", code="nesting_too_deep"
    )


def invalid_json() -> InvalidRequest:
    """The 400 for a body that is not JSON."""
    return InvalidRequest(
        "We could not parse the JSON body of your request. Send a valid JSON object.",
        code="invalid_json",
    )


def parse_chat_request(raw: bytes, *, max_depth: int) -> ChatCompletionRequest:
    """The validated request, or a 400 naming the offending parameter."""
    check_depth(raw, max_depth)
    try:
        return ChatCompletionRequest.from_json(raw)
    except msgspec.ValidationError as exc:  # before DecodeError, its base class
        raise invalid_request(str(exc)) from None
    except msgspec.DecodeError:
        raise invalid_json() from None


def param_of(path: str) -> str | None:
    """OpenAI-style parameter path (`messages.[0].content`) of msgspec's `$.messages[0].content`."""
    parts = [part for part in path.removeprefix("$").replace("[", ".[").split(".") if part]
    return ".".join(parts) or None


def invalid_request(text: str) -> InvalidRequest:
    """The 400 for msgspec's validation message: `<what> - at `$.path``, the path absent at the
    top level; a missing field is named in the message itself."""
    what, _, where = text.partition(" - at `")
    param = param_of(where.rstrip("`"))
    if param is None and what.startswith("Expected `object`"):
        return InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    missing = MISSING_FIELD.fullmatch(what)
    if missing is not None:
        param = f"{param}.{missing[1]}" if param else missing[1]
    message = f"Invalid request: '{param}': {what}" if param else f"Invalid request: {what}"
    return InvalidRequest(message[:MAX_ERROR_TEXT], param=param)
