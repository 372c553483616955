"""MockCerebrasClient: a deterministic stand-in for Cerebras that needs no key and no network.

The same request always gives the same answer: a stable echo of the last user message, a stable
id, token counts computed from the text, `system_fingerprint: fp_mock`. A streamed answer carries
the same text as the non-streamed one, in the chunk layout Cerebras uses (usage on the last chunk).

A request Cerebras would refuse (a model outside the mock's list, an invalid value, a malformed
tool or response-format object) is refused with the error the real transport raises for the same
upstream answer, so a mistake shows in development and routing treats it alike in both modes.
Every helper here is total: any JSON value in any field gives an answer or a refusal, never a crash.
"""

import hashlib
import json
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import msgspec

from ai_gateway.config import constants
from ai_gateway.errors import GatewayError
from ai_gateway.providers.upstream_errors import from_upstream_status
from ai_gateway.schemas import as_python, python_params

PROVIDER = constants.CEREBRAS
MOCK_FINGERPRINT = "fp_mock"
MOCK_CREATED = 1_700_000_000
MOCK_MODELS = ("gpt-oss-120b", "zai-glm-4.7", "llama3.1-8b")
ECHO_PREFIX = "[mock] You said:"
STREAM_FIELDS = frozenset({"stream", "stream_options"})

# The request shapes the Cerebras SDK's types allow (CEREBRAS.md A2, read in cerebras_cloud_sdk
# 1.91.0: resources/chat/completions.py and types/chat/completion_create_params.py).
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")
TOOL_CHOICE_MODES = ("none", "auto", "required")
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
FUNCTION_FIELDS: Mapping[str, type] = {"description": str, "parameters": dict, "strict": bool}
JSON_SCHEMA_FIELDS: Mapping[str, type] = {"description": str, "schema": dict, "strict": bool}
CHOICE_PARAMS: Mapping[str, tuple[str, ...]] = {
    "reasoning_effort": ("none", "low", "medium", "high"),
    "reasoning_format": ("none", "parsed", "text_parsed", "raw", "hidden"),
    "service_tier": ("auto", "default", "flex", "priority"),
}
TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")
JSON_TYPE_NAMES: Mapping[type, str] = {str: "a string", dict: "an object", bool: "a boolean"}


@dataclass(frozen=True, slots=True)
class Problem:
    """Why Cerebras would refuse a request: the parameter at fault and what is wrong with it."""

    param: str
    message: str
    code: str = "invalid_value"


def invalid(param: str, expected: str) -> Problem:
    """A problem worded as OpenAI-compatible APIs word it."""
    return Problem(param, f"Invalid '{param}': expected {expected}.")


def unknown_model(model: str) -> Problem:
    """A model Cerebras does not serve (here: outside the mock's list)."""
    # CEREBRAS.md records no real answer to an unknown model; its error table (B4) lists 404 for
    # NotFound, and `model_not_found` is the code OpenAI-compatible APIs give with it.
    served = ", ".join(MOCK_MODELS)
    message = f"Model {model} does not exist or you do not have access to it."
    return Problem("model", f"{message} Mock mode serves {served}.", code="model_not_found")


def error_body(problem: Problem) -> dict[str, str]:
    """A Cerebras error body for the problem."""
    # The flat shape CEREBRAS.md B4 finds likely (no real error body was recorded); the SDK and
    # the wire transport read it and the `{"error": {...}}` shape alike (A3, upstream_errors.py).
    return {
        "message": problem.message,
        "type": "invalid_request_error",
        "param": problem.param,
        "code": problem.code,
    }


def upstream_answer(
    model: str, messages: list[dict[str, Any]], params: dict[str, Any]
) -> tuple[int, dict[str, str]] | None:
    """The HTTP status and error body Cerebras would refuse this request with, or None."""
    if model not in MOCK_MODELS:
        return 404, error_body(unknown_model(model))
    problem = request_problem(messages, params)
    return None if problem is None else (400, error_body(problem))


def refusal(
    model: str, messages: list[dict[str, Any]], params: dict[str, Any]
) -> GatewayError | None:
    """The error the real transport raises for that refusal, or None when Cerebras would serve."""
    answer = upstream_answer(model, messages, params)
    return None if answer is None else from_upstream_status(PROVIDER, *answer)


def check_request(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> None:
    """Raise what Cerebras would answer to a request it refuses."""
    error = refusal(model, messages, params)
    if error is not None:
        raise error


def request_problem(messages: list[dict[str, Any]], params: dict[str, Any]) -> Problem | None:
    """The first thing wrong with the request, or None."""
    problems = (
        messages_problem(messages),
        *(token_limit_problem(name, params.get(name)) for name in TOKEN_LIMITS),
        choices_problem(params.get("n")),
        tool_choice_problem(params.get("tool_choice")),
        tools_problem(params.get("tools")),
        response_format_problem(params.get("response_format")),
        *(
            choice_problem(name, params.get(name), allowed)
            for name, allowed in CHOICE_PARAMS.items()
        ),
    )
    return next((problem for problem in problems if problem is not None), None)


def is_integer(value: object) -> TypeGuard[int]:
    """Whether a JSON value is an integer (JSON `true` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_one_of(value: object, allowed: tuple[str, ...]) -> bool:
    """Whether a JSON value is one of the allowed strings (total: lists and objects are not)."""
    return isinstance(value, str) and value in allowed


def messages_problem(messages: object) -> Problem | None:
    """A message that is not an object with a role Cerebras knows."""
    if not isinstance(messages, list):
        return invalid("messages", "an array of messages")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if not is_one_of(role, MESSAGE_ROLES):
            return invalid(f"messages[{index}].role", f"one of {', '.join(MESSAGE_ROLES)}")
    return None


def token_limit_problem(name: str, value: object) -> Problem | None:
    """A max_tokens or max_completion_tokens that is not a positive integer."""
    # A limit below 1 leaves no room for an answer; CEREBRAS.md records no answer for it, so the
    # mock gives the 400 an OpenAI-compatible API gives for an out-of-range value.
    if value is None or (is_integer(value) and value > 0):
        return None
    return invalid(name, "an integer of at least 1")


def choices_problem(value: object) -> Problem | None:
    """An `n` other than 1.

    The SDK names `n`, but nothing shows Cerebras serving more than one choice (CEREBRAS.md B7),
    and the mock answers exactly one: refusing keeps an `n: 2` from passing here unnoticed.
    """
    if value is None or (is_integer(value) and value == 1):
        return None
    return invalid("n", "1 (one choice per request)")


def tool_choice_problem(choice: object) -> Problem | None:
    """A tool_choice other than a mode or a `{"type": "function", "function": {"name"}}`."""
    if choice is None or is_one_of(choice, TOOL_CHOICE_MODES):
        return None
    if isinstance(choice, dict):
        return function_problem(choice, "tool_choice")
    return invalid("tool_choice", "'none', 'auto', 'required' or a function object")


def tools_problem(tools: object) -> Problem | None:
    """A tools value that is not an array of well-formed function tools."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        return invalid("tools", "an array of tools")
    for index, tool in enumerate(tools):
        problem = tool_problem(tool, f"tools[{index}]")
        if problem is not None:
            return problem
    return None


def tool_problem(tool: object, path: str) -> Problem | None:
    """One tool: a function object whose optional fields have their types."""
    if not isinstance(tool, dict):
        return invalid(path, "an object")
    problem = function_problem(tool, path)
    if problem is not None:
        return problem
    return fields_problem(tool["function"], FUNCTION_FIELDS, f"{path}.function")


def function_problem(entry: dict[str, Any], path: str) -> Problem | None:
    """A `{"type": "function", "function": {"name": ...}}` object (a tool or a tool_choice)."""
    if entry.get("type") != "function":
        return invalid(f"{path}.type", "'function'")
    function = entry.get("function")
    if not isinstance(function, dict):
        return invalid(f"{path}.function", "an object")
    if not isinstance(function.get("name"), str):
        return invalid(f"{path}.function.name", "a string")
    return None


def fields_problem(entry: dict[str, Any], fields: Mapping[str, type], path: str) -> Problem | None:
    """An optional field of the wrong JSON type (null counts as absent)."""
    for name, kind in fields.items():
        value = entry.get(name)
        if value is not None and not isinstance(value, kind):
            return invalid(f"{path}.{name}", JSON_TYPE_NAMES[kind])
    return None


def response_format_problem(fmt: object) -> Problem | None:
    """A response_format other than text, json_object, or json_schema with a named schema."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        return invalid("response_format", "an object")
    kind = fmt.get("type")
    if not is_one_of(kind, RESPONSE_FORMAT_TYPES):
        return invalid("response_format.type", "'text', 'json_object' or 'json_schema'")
    if kind != "json_schema":
        return None
    spec = fmt.get("json_schema")
    path = "response_format.json_schema"
    if not isinstance(spec, dict):
        return invalid(path, "an object")
    if not isinstance(spec.get("name"), str):
        return invalid(f"{path}.name", "a string")
    return fields_problem(spec, JSON_SCHEMA_FIELDS, path)


def choice_problem(name: str, value: object, allowed: tuple[str, ...]) -> Problem | None:
    """A value outside the set the SDK's type allows."""
    if value is None or is_one_of(value, allowed):
        return None
    return invalid(name, f"one of {', '.join(allowed)}")


def message_text(message: object) -> str:
    """The text of a message: its string content, or its text parts joined."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        return " ".join(part for part in parts if isinstance(part, str))
    return ""


def count_tokens(text: str) -> int:
    """A stable, cheap token estimate: whitespace-separated words."""
    return len(text.split())


def requested_tool(params: dict[str, Any]) -> str | None:
    """The function the request forces, if tool_choice forces one."""
    choice = params.get("tool_choice")
    if isinstance(choice, dict):
        return function_name(choice)
    tools = params.get("tools")
    if choice == "required" and isinstance(tools, list) and tools:
        return function_name(tools[0])
    return None


def function_name(entry: object) -> str | None:
    """The `function.name` of a tool or a tool_choice, if it has one."""
    function = entry.get("function") if isinstance(entry, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) and name else None


@dataclass(frozen=True, slots=True)
class MockAnswer:
    """The one answer a given request gets."""

    id: str
    model: str
    text: str | None
    tool_name: str | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def for_request(
        cls, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> "MockAnswer":
        """Derive the answer from the request alone."""
        tool_name = requested_tool(params)
        users = [message_text(m) for m in messages if is_user_message(m)]
        text, finish = (None, "tool_calls") if tool_name else answer_text(users[-1:], params)
        return cls(
            id=f"chatcmpl-mock-{request_digest(model, messages, params)}",
            model=model,
            text=text,
            tool_name=tool_name,
            finish_reason=finish,
            prompt_tokens=sum(count_tokens(message_text(m)) for m in messages),
            completion_tokens=count_tokens(text or "") + (1 if tool_name else 0),
        )

    def header(self) -> dict[str, Any]:
        """The fields every completion and chunk shares."""
        return {
            "id": self.id,
            "created": MOCK_CREATED,
            "model": self.model,
            "system_fingerprint": MOCK_FINGERPRINT,
        }

    def usage(self) -> dict[str, int]:
        """Token counts."""
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
        }

    def tool_calls(self) -> list[dict[str, Any]]:
        """The forced tool call, with empty arguments."""
        call_id = f"call_mock_{self.id[-12:]}"
        function = {"name": self.tool_name, "arguments": "{}"}
        return [{"index": 0, "id": call_id, "type": "function", "function": function}]

    def completion(self) -> dict[str, Any]:
        """The non-streaming answer."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_name:
            message["tool_calls"] = [
                {k: v for k, v in call.items() if k != "index"} for call in self.tool_calls()
            ]
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        return {
            **self.header(),
            "object": "chat.completion",
            "choices": [choice],
            "usage": self.usage(),
        }

    def chunks(self) -> list[dict[str, Any]]:
        """The streamed answer: role, content pieces (or the tool call), then finish with usage."""
        deltas: list[dict[str, Any]] = [{"role": "assistant"}]
        if self.tool_name:
            deltas.append({"tool_calls": self.tool_calls()})
        deltas += [{"content": piece} for piece in re.findall(r"\s*\S+", self.text or "")]
        chunks = [self.chunk({"delta": delta, "index": 0}) for delta in deltas]
        last = {"delta": {}, "index": 0, "finish_reason": self.finish_reason}
        return [*chunks, {**self.chunk(last), "usage": self.usage()}]

    def chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        """One chunk with one choice."""
        return {**self.header(), "object": "chat.completion.chunk", "choices": [choice]}


def answer_text(last_user: list[str], params: dict[str, Any]) -> tuple[str, str]:
    """The echo text and its finish reason (`length` when max tokens cut it)."""
    said = last_user[0] if last_user else ""
    fmt = params.get("response_format")
    if isinstance(fmt, dict) and is_one_of(fmt.get("type"), ("json_object", "json_schema")):
        return json.dumps({"mock": True, "echo": said}), "stop"
    text = f"{ECHO_PREFIX} {said}".rstrip()
    limit = token_limit(params)
    if limit is not None and limit < count_tokens(text):
        return " ".join(text.split()[:limit]), "length"
    return text, "stop"


def token_limit(params: dict[str, Any]) -> int | None:
    """The positive token limit the request sets (max_completion_tokens wins), if any."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = params.get(name)
        if is_integer(value) and value > 0:
            return value
    return None


def is_user_message(message: object) -> bool:
    """Whether a message is the user's."""
    return isinstance(message, dict) and message.get("role") == "user"


def request_digest(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """A stable digest of the request, the same for its streaming and non-streaming forms."""
    stable = {k: v for k, v in params.items() if k not in STREAM_FIELDS}
    canonical = json.dumps([model, messages, stable], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


class MockCerebrasClient:
    """Mock mode: answers every request locally and deterministically."""

    is_mock = True

    def __repr__(self) -> str:
        return "MockCerebrasClient()"

    def with_connect_timeout(self, seconds: float) -> "MockCerebrasClient":
        """The mock connects to nothing."""
        return self

    async def chat(self, model: str, messages: msgspec.Raw, **params: Any) -> dict[str, Any]:
        """The deterministic completion, or the error Cerebras would give."""
        listed, plain = as_python(messages), python_params(params)
        check_request(model, listed, plain)
        return MockAnswer.for_request(model, listed, plain).completion()

    async def stream_chat(
        self, model: str, messages: msgspec.Raw, **params: Any
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The deterministic completion, chunk by chunk; a refusal comes before any chunk."""
        listed, plain = as_python(messages), python_params(params)
        check_request(model, listed, plain)
        for chunk in MockAnswer.for_request(model, listed, plain).chunks():
            yield chunk

    async def list_models(self) -> list[dict[str, Any]]:
        """A small fixed list."""
        return [
            {
                "id": model,
                "object": "model",
                "created": MOCK_CREATED,
                "owned_by": constants.CEREBRAS,
            }
            for model in MOCK_MODELS
        ]

    async def aclose(self) -> None:
        """Nothing to release."""
