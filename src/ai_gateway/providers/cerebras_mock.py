"""MockCerebrasClient: a deterministic stand-in for Cerebras that needs no key and no network.

The same request always gives the same answer: a stable echo of the last user message, a stable
id, token counts computed from the text, `system_fingerprint: fp_mock`. A streamed answer carries
the same text as the non-streamed one, in the chunk layout Cerebras uses (usage on the last chunk).

A request Cerebras would refuse is refused first (providers/cerebras_refusals.py), so a mistake
shows in development. Every helper here is total: any JSON value in any field gives an answer.
"""

import hashlib
import json
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import msgspec

from ai_gateway.config import constants
from ai_gateway.providers.cerebras_refusals import MOCK_MODELS, check_request, is_integer, is_one_of
from ai_gateway.schemas import as_python, python_params

MOCK_FINGERPRINT = "fp_mock"
MOCK_CREATED = 1_700_000_000
ECHO_PREFIX = "[mock] You said:"
STREAM_FIELDS = frozenset({"stream", "stream_options"})


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
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The deterministic completion, a chunk at a time; a refusal comes before any chunk."""
        listed, plain = as_python(messages), python_params(params)
        check_request(model, listed, plain)
        for chunk in MockAnswer.for_request(model, listed, plain).chunks():
            yield [chunk]

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
