"""Upstream replies -> the exact OpenAI shapes, for every OpenAI-like upstream.

Upstreams omit what OpenAI clients require (`logprobs`, `message.refusal`, `finish_reason: null`
on intermediate chunks) and put usage on the finishing chunk instead of a separate one. This is
the one place that fills those gaps; anything that still does not fit is a malformed reply (502).
"""

import time
import uuid
from math import isfinite
from typing import Any

from ai_gateway.errors import GatewayError
from ai_gateway.providers.upstream_errors import from_upstream_status, malformed
from ai_gateway.redaction import Redactor
from ai_gateway.schemas import (
    FINISH_REASONS,
    ChatCompletionChunk,
    ChatCompletionResponse,
)

ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
# isinstance() takes these tuples as they are; a `str | None` there is built on every call.
NUMBER = (int, float)
TEXT_OR_NULL = (str, type(None))
OBJECT_OR_NULL = (dict, type(None))


def new_completion_id() -> str:
    """An id in OpenAI's format for replies that came without one."""
    return f"chatcmpl-{uuid.uuid4()}"


def error_in_body(
    provider: str, data: dict[str, Any], redactor: Redactor | None = None
) -> GatewayError | None:
    """A `{"error": ..., "status_code": N}` body sent in place of a completion, its text redacted.

    The clients check with the redactor that knows every configured key; the check here, which
    knows only the key shapes, is for clients that do not (the mock, test fakes).
    """
    if data.get("error") is None or data.get("choices"):
        return None
    status = data.get("status_code")
    code = status if isinstance(status, int) else 502
    return from_upstream_status(provider, code, data, redactor=redactor)


def created_of(data: dict[str, Any]) -> int:
    """The integer `created`, now when the upstream gave none."""
    created = data.get("created")
    if isinstance(created, NUMBER) and not isinstance(created, bool) and isfinite(created):
        return int(created)
    return int(time.time())


def choices_of(provider: str, data: dict[str, Any]) -> list[Any]:
    """The upstream's choices: a list, or none at all; anything else is a malformed reply."""
    choices = data.get("choices")
    if choices is None:
        return []
    if not isinstance(choices, list):
        raise malformed(provider, "choices is not a list")
    return choices


def finish_reason_of(value: object, *, final: bool) -> str | None:
    """An OpenAI finish reason; unknown or missing ones on a final choice become `stop`."""
    if isinstance(value, str) and value in FINISH_REASONS:
        return value
    return "stop" if final or value is not None else None


def usage_of(value: object) -> dict[str, Any]:
    """The upstream's usage with all three counts, zeros when absent."""
    if not isinstance(value, dict):
        return dict(ZERO_USAGE)
    usage = {**ZERO_USAGE, **value}
    for name in ZERO_USAGE:
        count = usage[name]
        if type(count) is int:
            continue
        try:  # numeric strings become numbers
            usage[name] = int(count)
        except (TypeError, ValueError, OverflowError):
            continue  # left for the shape check to reject
    if "total_tokens" not in value:
        try:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        except TypeError:
            return usage  # the shape check rejects the counts
    return usage


def completion_choice(choice: object) -> dict[str, Any]:
    """One non-streaming choice with `refusal`, `logprobs` and `finish_reason` filled in."""
    if not isinstance(choice, dict):
        return {}
    message = choice.get("message") or {}
    if isinstance(message, dict):
        message = {"role": "assistant", "content": None, "refusal": None, **message}
        if message.get("tool_calls") is None:
            message.pop("tool_calls", None)
    return {
        **choice,
        "message": message,
        "logprobs": choice.get("logprobs"),
        "finish_reason": finish_reason_of(choice.get("finish_reason"), final=True),
    }


def to_completion(provider: str, data: dict[str, Any]) -> ChatCompletionResponse:
    """A non-streaming upstream reply as an OpenAI chat completion."""
    if (error := error_in_body(provider, data)) is not None:
        raise error
    normalised = {
        **data,
        "id": data.get("id") or new_completion_id(),
        "object": "chat.completion",
        "created": created_of(data),
        "choices": [completion_choice(c) for c in choices_of(provider, data)],
        "usage": usage_of(data.get("usage")),
    }
    if not normalised["choices"]:
        raise malformed(provider, "no choices")
    if not is_completion_shaped(normalised):
        raise malformed(provider, "not a chat completion")
    return ChatCompletionResponse(normalised, is_usage_reported=isinstance(data.get("usage"), dict))


def is_completion_shaped(completion: dict[str, Any]) -> bool:
    """What OpenAI clients rely on in a normalised completion (checked by hand: see schemas.py)."""
    return (
        isinstance(completion["id"], str)
        and isinstance(completion.get("model"), str)
        and isinstance(completion.get("system_fingerprint"), TEXT_OR_NULL)
        and all(is_message_choice(choice) for choice in completion["choices"])
        and is_usage_shaped(completion["usage"])
    )


def is_message_choice(choice: dict[str, Any]) -> bool:
    """A completion choice: an index and an assistant message with text (or null) content."""
    message = choice.get("message")
    return (
        isinstance(choice.get("index"), int)
        and isinstance(message, dict)
        and message.get("role") == "assistant"
        and isinstance(message.get("content"), TEXT_OR_NULL)
        and isinstance(message.get("refusal"), TEXT_OR_NULL)
        and isinstance(message.get("tool_calls", []), list)
        and isinstance(choice.get("logprobs"), OBJECT_OR_NULL)
    )


def is_usage_shaped(usage: object) -> bool:
    """All three token counts, as integers."""
    return isinstance(usage, dict) and all(isinstance(usage.get(k), int) for k in ZERO_USAGE)


def chunk_choice(choice: object) -> dict[str, Any]:
    """One stream choice with `finish_reason` (null until the end) and `logprobs` filled in."""
    if not isinstance(choice, dict):
        return {}
    delta = choice.get("delta") or {}
    if isinstance(delta, dict) and "tool_calls" in delta and delta["tool_calls"] is None:
        delta = {k: v for k, v in delta.items() if k != "tool_calls"}
    reason = choice.get("finish_reason")
    return {
        **choice,
        "delta": delta,
        "logprobs": choice.get("logprobs"),
        "finish_reason": reason if reason is None else finish_reason_of(reason, final=False),
    }


class ChunkNormalizer:
    """Turns one upstream stream's chunks into OpenAI chunks, usage in a chunk of its own.

    Each chunk is filled in and checked in one pass (every event of every stream comes through
    here: a pass to fill in and another to check cost a third more)."""

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._id: str | None = None  # the upstream's, else one made when first needed
        self.is_finished = False

    def feed(self, data: dict[str, Any]) -> list[ChatCompletionChunk]:
        """The OpenAI chunks for one upstream chunk (none, one, or one plus a usage chunk)."""
        if data.get("error") is not None and (error := error_in_body(self._provider, data)):
            raise error
        self._id = data.get("id") or self._id or new_completion_id()
        choices = [self._choice(c) for c in choices_of(self._provider, data)]
        chunk = {
            **data,
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": created_of(data),
            "choices": choices,
        }
        if not isinstance(self._id, str) or not isinstance(chunk.get("model"), str):
            raise self._malformed()
        usage = chunk.pop("usage", None)
        if usage is None:
            return [ChatCompletionChunk(chunk)]
        usage = usage_of(usage)
        if not is_usage_shaped(usage):
            raise self._malformed()
        alone = {k: v for k, v in chunk.items() if k != "time_info"} | {
            "choices": [],
            "usage": usage,
        }
        if not choices:
            return [ChatCompletionChunk(alone)]
        return [ChatCompletionChunk(chunk), ChatCompletionChunk(alone)]

    def _choice(self, choice: object) -> dict[str, Any]:
        """One choice filled in and checked; a finishing one marks the stream finished."""
        normalised = chunk_choice(choice)
        if not is_choice_shaped(normalised):
            raise self._malformed()
        if normalised["finish_reason"]:
            self.is_finished = True
        return normalised

    def check_finished(self) -> None:
        """A stream that ends before any choice finished was cut off, not completed."""
        if not self.is_finished:
            raise self.unfinished()

    def unfinished(self) -> GatewayError:
        """The error of a stream that ended before any choice finished."""
        return malformed(self._provider, "the stream ended before the answer finished")

    def _malformed(self) -> GatewayError:
        return malformed(self._provider, "not a chat completion chunk")


def is_choice_shaped(choice: dict[str, Any]) -> bool:
    """A stream choice: an integer index and a delta object with text (or null) content."""
    delta = choice.get("delta")
    return (
        isinstance(choice.get("index"), int)
        and isinstance(delta, dict)
        and isinstance(delta.get("content"), TEXT_OR_NULL)
        and isinstance(delta.get("role"), TEXT_OR_NULL)
        and isinstance(delta.get("tool_calls", []), list)
    )
