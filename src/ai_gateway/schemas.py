"""Chat Completions wire values: the request, the response, stream chunks and the model list.

Unknown fields are kept everywhere, so a field OpenAI adds tomorrow passes through instead of
causing a 400. The request is validated strictly against request_schema.py: a mistyped field is
the caller's error, not something to coerce.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import msgspec
from pydantic import BaseModel, ConfigDict

from ai_gateway.request_schema import FIELDS_DECODER, SHAPE_DECODER

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
FINISH_REASONS: frozenset[str] = frozenset(get_args(FinishReason))


MODEL_AND_MESSAGES = frozenset({"model", "messages"})


def as_python(value: Any) -> Any:
    """A value as Python objects: raw JSON (a field as the caller sent it) decoded, others
    as they are."""
    return msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value


def python_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as Python objects, for clients that build the upstream JSON themselves."""
    return {name: as_python(value) for name, value in params.items()}


class ChatCompletionRequest:
    """A validated `POST /v1/chat/completions` body, held as the caller's own JSON.

    `messages` and every parameter are the caller's bytes (`msgspec.Raw`), forwarded upstream
    as they came: unknown fields pass, nothing is rebuilt per message, and memory stays a small
    multiple of the body. Deployment overrides and the gateway's own additions (`stream`,
    `stream_options`) are Python values next to them.
    """

    __slots__ = ("is_streaming", "messages", "model", "params", "wants_stream_usage")

    def __init__(
        self,
        model: str,
        messages: msgspec.Raw,
        params: dict[str, Any],
        *,
        is_streaming: bool = False,
        wants_stream_usage: bool = False,
    ) -> None:
        self.model = model
        self.messages = messages
        self.params = params
        self.is_streaming = is_streaming
        self.wants_stream_usage = wants_stream_usage

    @classmethod
    def from_json(cls, raw: bytes) -> "ChatCompletionRequest":
        """Validate a body (else msgspec.ValidationError or msgspec.DecodeError) and keep it."""
        shape = SHAPE_DECODER.decode(raw)
        params = FIELDS_DECODER.decode(raw)
        messages = params.pop("messages")
        del params["model"]
        options = shape.stream_options
        return cls(
            shape.model,
            messages,
            params,
            is_streaming=bool(shape.stream),
            wants_stream_usage=bool(options and options.include_usage),
        )

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "ChatCompletionRequest":
        """Validate a body given as Python objects."""
        return cls.from_json(msgspec.json.encode(body))

    def for_upstream(
        self, model: str, overrides: Mapping[str, Any] | None = None
    ) -> "ChatCompletionRequest":
        """This request for another model id, with parameter overrides on top of the caller's."""
        if model == self.model and not overrides:
            return self
        params = {**self.params, **overrides} if overrides else self.params
        return ChatCompletionRequest(
            model,
            self.messages,
            params,
            is_streaming=self.is_streaming,
            wants_stream_usage=self.wants_stream_usage,
        )

    def upstream_params(self) -> dict[str, Any]:
        """Every field the caller set except model and messages, unknown ones included."""
        return dict(self.params)

    def upstream_messages(self) -> msgspec.Raw:
        """The messages exactly as the caller sent them."""
        return self.messages


class ResponseModel(BaseModel):
    """Base of the response models: lenient types, unknown fields kept."""

    model_config = ConfigDict(extra="allow")


class Usage(ResponseModel):
    """Token counts of one completion."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class ChatCompletionResponse:
    """One normalised `chat.completion`, sent exactly as `data` holds it.

    A plain value, like ChatCompletionChunk below: validating the upstream's reply into a model
    and dumping it back cost about a tenth of the gateway's CPU per request.
    `providers/normalizer.py` checks the shape instead.
    """

    data: dict[str, Any]
    is_usage_reported: bool = True
    """Whether the upstream reported `usage` (`data` always has one: zeros when it did not)."""

    @property
    def id(self) -> str:
        """The completion id."""
        completion_id: str = self.data["id"]
        return completion_id

    @property
    def usage(self) -> Usage | None:
        """Token counts as the upstream reported them; None when it reported none."""
        return Usage.model_validate(self.data["usage"]) if self.is_usage_reported else None


@dataclass(frozen=True, slots=True)
class ChatCompletionChunk:
    """One normalised `chat.completion.chunk`, sent exactly as `data` holds it.

    A plain value, not a pydantic model: a stream carries many chunks, and validating and then
    dumping a model for each cost more than everything else the gateway does for a chunk.
    """

    data: dict[str, Any]

    @property
    def id(self) -> str:
        """The completion id every chunk of the stream shares."""
        chunk_id: str = self.data["id"]
        return chunk_id

    @property
    def usage(self) -> Usage | None:
        """Token counts, on the usage chunk only."""
        usage = self.data.get("usage")
        return None if usage is None else Usage.model_validate(usage)


class ModelCard(ResponseModel):
    """One entry of the model list."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str


class ModelList(ResponseModel):
    """`GET /v1/models` body."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
