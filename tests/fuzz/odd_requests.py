"""Requests of any shape, as hypothesis strategies: chat bodies valid, mutated or broken (wrong
types, missing fields, unknown fields, odd unicode, numbers out of range, nesting around the
limit, not JSON, not UTF-8, cut short), odd paths and methods, any content type, any form of
Authorization, odd headers."""

import json
from typing import Any

from hypothesis import strategies as st

from ai_gateway.config.constants import DEFAULT_MAX_JSON_DEPTH
from tests.fakes import GATEWAY_KEY, MODEL

UNIFIED_MODEL = f"cerebras/{MODEL}"
RawRequest = tuple[str, str, dict[str, Any], bytes]


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` four times in five, else `odd`: odd parts of a request one or two at a time, so
    that each is met where the parts before it have passed."""
    return st.integers(0, 4).flatmap(lambda n: odd if n == 0 else usual)


class Raw(str):
    """JSON text placed into a body verbatim (numbers and escapes json.dumps would not make)."""


def to_json(value: Any, *, ensure_ascii: bool) -> str:
    """`value` as JSON text, Raw fragments as they are."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        items = (
            json.dumps(key, ensure_ascii=ensure_ascii)
            + ":"
            + to_json(item, ensure_ascii=ensure_ascii)
            for key, item in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(item, ensure_ascii=ensure_ascii) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


ODD_TEXT = st.sampled_from(
    [
        "",
        "\x00",
        "\u202eright-to-left",
        "\ufeffbom",
        "\uffff\ufffe",
        "e\u0301\u0301\u0301",
        "\U0001f600" * 50,
        "line\r\nbreak",
        "</script><script>",
        "%s%n%x",
        "a" * 20_000,
    ]
) | st.text(max_size=40)
# Numbers JSON allows that no machine type holds, and tokens JSON does not allow at all.
ODD_NUMBERS = st.sampled_from(
    [
        Raw("1e400"),
        Raw("-1e400"),
        Raw("1" + "0" * 400),
        Raw("-0"),
        Raw("18446744073709551616"),
        Raw("-9223372036854775809"),
        Raw("4.9e-324"),
        Raw("1.7976931348623157e308"),
        Raw("NaN"),
        Raw("Infinity"),
        Raw("0x10"),
        Raw("01"),
    ]
)
ODD_ESCAPES = st.sampled_from(
    [Raw('"\\ud800"'), Raw('"\\udfff\\ud800"'), Raw('"\\u0000"'), Raw('"\\uZZZZ"'), Raw('"\\x41"')]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ANY_VALUE = JSON_VALUES | ODD_TEXT | ODD_NUMBERS | ODD_ESCAPES
FIELDS = (
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "response_format",
    "user",
)
MODELS = st.sampled_from([UNIFIED_MODEL, MODEL, "cerebras/", "/x", "nobody/x", "cerebras/\u00e9"])


def nested(depth: int) -> Any:
    """`depth` levels of arrays and objects, alternating."""
    value: Any = 1
    for level in range(depth - 1):
        value = [value] if level % 2 else {"k": value}
    return value


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A chat body the gateway should accept, more or less plain."""
    content: Any = draw(ODD_TEXT | st.just("hello"))
    if draw(st.booleans()):
        content = [{"type": "text", "text": content}]
    body: dict[str, Any] = {
        "model": draw(st.sampled_from([UNIFIED_MODEL, UNIFIED_MODEL, "cerebras/other-model"])),
        "messages": [
            {"role": draw(st.sampled_from(["user", "system", "developer"])), "content": content}
        ],
    }
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 2))
    return body


@st.composite
def mutated_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with one thing wrong, odd or merely unknown."""
    body = draw(valid_bodies())
    mutation = draw(
        st.sampled_from(["type", "drop", "extra", "number", "deep", "message", "model"])
    )
    if mutation == "type":
        body[draw(st.sampled_from(FIELDS))] = draw(ANY_VALUE)
    elif mutation == "drop":
        body.pop(draw(st.sampled_from(["model", "messages"])))
    elif mutation == "extra":
        body.update(draw(st.dictionaries(st.text(max_size=12), ANY_VALUE, min_size=1, max_size=3)))
    elif mutation == "number":
        body[draw(st.sampled_from(["temperature", "max_tokens", "seed", "n", "x_unknown"]))] = draw(
            ODD_NUMBERS
        )
    elif mutation == "deep":
        # Around the limit: nested in an unknown field, or where a tool's schema may nest.
        depth = draw(st.integers(DEFAULT_MAX_JSON_DEPTH - 4, DEFAULT_MAX_JSON_DEPTH + 4))
        if draw(st.booleans()):
            body["x_nested"] = nested(depth - 1)
        else:
            function = {"name": "f", "parameters": nested(depth - 4)}
            body["tools"] = [{"type": "function", "function": function}]
    elif mutation == "message":
        body["messages"] = [
            draw(
                st.dictionaries(
                    st.sampled_from(["role", "content", "name", "tool_calls"]), ANY_VALUE
                )
            )
        ]
    else:
        body["model"] = draw(MODELS | ODD_TEXT)
    return body


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Any request body: valid, mutated, not an object, not JSON, not UTF-8, cut short."""
    kind = draw(
        st.sampled_from(["valid", "mutated", "mutated", "value", "bytes", "cut", "bom", "empty"])
    )
    if kind in ("valid", "mutated", "cut", "bom"):
        body = draw(valid_bodies() if kind == "valid" else mutated_bodies())
        text = to_json(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        if kind == "cut":
            return text[: draw(st.integers(0, max(len(text) - 1, 0)))]
        return b"\xef\xbb\xbf" + text if kind == "bom" else text
    if kind == "value":
        return to_json(draw(ANY_VALUE), ensure_ascii=True).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    return b""


# Chat routes as written by hand: trailing slashes are the same route, the rest are not.
CHAT_PATHS = st.sampled_from(["/v1/chat/completions", "/cerebras/v1/chat/completions"])
ODD_CHAT_PATHS = st.sampled_from(
    [
        "/v1/chat/completions/",
        "/cerebras/v1/chat/completions/",
        "/v1/chat/completions?stream=true&model=x",
        "/CEREBRAS/v1/chat/completions",
        "//v1/chat/completions",
        "/v1//chat/completions",
        "/v1/chat%2Fcompletions",
        "/nobody/v1/chat/completions",
        "/%00/v1/chat/completions",
    ]
)
PATHS = st.sampled_from(
    [
        "/v1/chat/completions",
        "/cerebras/v1/chat/completions/",
        "/v1/models",
        "/v1/models/",
        "/cerebras/v1/models",
        "/%C3%BC/v1/models",
        "/v1/deployments/health",
        "/healthz",
        "/healthz/",
        "/readyz",
        "/openapi.json",
        "/openapi.json/",
        "/",
        "/v1",
        "/v1/models/../chat/completions",
        "/v1/models?limit=-1&limit=%FF",
        "/" + "a" * 3000,
    ]
)
METHODS = st.sampled_from(
    ["GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND"]
)
JSON_TYPES = st.sampled_from(["application/json", None])
CONTENT_TYPES = st.sampled_from(
    [
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/vnd.openai+json",
        "application/json; charset=latin-1",
        "application/json;;;",
        "text/plain",
        "text/event-stream",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "*/*",
        "",
    ]
)
VALID_AUTHORIZATION = st.just(f"Bearer {GATEWAY_KEY}")
AUTHORIZATIONS = st.sampled_from(
    [
        f"bearer {GATEWAY_KEY}",
        f"Bearer {GATEWAY_KEY}   ",
        f"Bearer  {GATEWAY_KEY}",
        f"Bearer {GATEWAY_KEY} extra",
        f"Basic {GATEWAY_KEY}",
        f"Bearer {GATEWAY_KEY[:-1]}",
        f"Bearer {GATEWAY_KEY}x",
        GATEWAY_KEY,
        "Bearer",
        "Bearer ",
        "",
        b"Bearer \xe9\xff",
        None,
    ]
)


def field_value(raw: bytes) -> bytes:
    """`raw` without the control characters no HTTP parser lets through in a header value (the
    server's parser answers those itself, in plain text: see test_reproductions.py)."""
    return bytes(byte for byte in raw if byte == 0x09 or (byte >= 0x20 and byte != 0x7F))


EXTRA_HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "Accept",
            "Accept-Encoding",
            "Content-Encoding",
            "X-Request-Id",
            "Expect",
            "Connection",
            "Cookie",
            "X-Forwarded-For",
        ]
    ),
    st.sampled_from(
        [
            "text/event-stream",
            "gzip",
            "identity",
            "close",
            "100-continue",
            "req-1",
            "has space",
            "x" * 500,
            "",
            "127.0.0.1, 10.0.0.1",
        ]
    )
    | st.binary(max_size=20).map(field_value),
    max_size=3,
)


def headers_of(draw: st.DrawFn) -> dict[str, Any]:
    """Odd headers, an Authorization of any form (or none) and any content type (or none)."""
    headers: dict[str, Any] = dict(draw(mostly(st.just({}), EXTRA_HEADERS)))
    authorization = draw(mostly(VALID_AUTHORIZATION, AUTHORIZATIONS))
    if authorization is not None:
        headers["Authorization"] = authorization
    content_type = draw(mostly(JSON_TYPES, CONTENT_TYPES))
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


@st.composite
def chat_requests(draw: st.DrawFn) -> RawRequest:
    """A POST to a chat route: any body, any headers."""
    return "POST", draw(mostly(CHAT_PATHS, ODD_CHAT_PATHS)), headers_of(draw), draw(bodies())


@st.composite
def any_requests(draw: st.DrawFn) -> RawRequest:
    """Any method on any path, with any headers and a small body."""
    body = draw(st.sampled_from([b"", b"{}", b'{"model":"cerebras/x","messages":[]}', b"\xff"]))
    return draw(METHODS), draw(PATHS), headers_of(draw), body
