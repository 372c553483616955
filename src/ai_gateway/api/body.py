"""Reading the chat request body: size limit, content type, nesting, JSON, validation -> 4xx."""

import re

import msgspec
from starlette.requests import Request

from ai_gateway.errors import InvalidRequest, RequestTooLarge
from ai_gateway.schemas import ChatCompletionRequest

MAX_ERROR_TEXT = 500
MISSING_FIELD = re.compile(r"Object missing required field `(.+)`")
# Brackets of both kinds as one kind (nesting is all that is counted), quotes kept, the rest out.
SQUARE = bytes.maketrans(b"{}", b"[]")
NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
STRING = re.compile(rb'"[^"]*"')


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


def nesting_depth(raw: bytes, limit: int) -> int:
    """How deeply the JSON text nests arrays and objects, counted up to `limit + 1`.

    Works on the bytes, before any parsing, in C-speed passes: escaped quotes out, everything
    but brackets and quotes out, strings out, then each pass removes the innermost empty pairs
    (one level). Text that is not JSON stops early; the parser rejects it next.
    """
    if b'\\"' in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = raw.translate(SQUARE, NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in text:
        text = STRING.sub(b"", text)
    depth = 0
    while text and depth <= limit:
        inner = text.replace(b"[]", b"")
        if len(inner) == len(text):
            break
        text, depth = inner, depth + 1
    return depth


def check_depth(raw: bytes, limit: int) -> None:
    """A 400 for a body nested deeper than `limit`, before any other work on it."""
    if nesting_depth(raw, limit) > limit:
        raise InvalidRequest(
            f"The request body is nested more than {limit} levels deep.", code="nesting_too_deep"
        )


def parse_chat_request(raw: bytes, *, max_depth: int) -> ChatCompletionRequest:
    """The validated request, or a 400 naming the offending parameter."""
    check_depth(raw, max_depth)
    try:
        return ChatCompletionRequest.from_json(raw)
    except msgspec.ValidationError as exc:  # before DecodeError, its base class
        raise invalid_request(str(exc)) from None
    except msgspec.DecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send a valid JSON object.",
            code="invalid_json",
        ) from None


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
