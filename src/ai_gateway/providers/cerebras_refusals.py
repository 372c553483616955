"""What Cerebras refuses, as the mock refuses it: a model outside the mock's list, an invalid
value, a malformed tool or response-format object. Each refusal is the error the real transport
raises for the same upstream answer, so routing treats it alike in both modes. Every check is
total: any JSON value in any field gives a refusal or none, never a crash.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from ai_gateway.config import constants
from ai_gateway.errors import GatewayError
from ai_gateway.providers.upstream_errors import from_upstream_status

PROVIDER = constants.CEREBRAS
MOCK_MODELS = ("gpt-oss-120b", "zai-glm-4.7", "llama3.1-8b")

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
