"""Chat Completions wire models: the request, the response, stream chunks and the model list.

Every model keeps unknown fields (`extra="allow"`), so a field OpenAI adds tomorrow passes
through instead of causing a 400. The request is validated strictly: a mistyped field is the
caller's error, not something to coerce.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
FINISH_REASONS: frozenset[str] = frozenset(get_args(FinishReason))


class RequestModel(BaseModel):
    """Base of the request models: strict types, unknown fields kept."""

    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(RequestModel):
    """One part of a message's content: text, image_url, input_audio, file, ..."""

    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_part_has_text(self) -> "ContentPart":
        """A `text` part must carry its text."""
        if self.type == "text" and self.text is None:
            raise ValueError("a content part of type 'text' needs a 'text' string")
        return self


Content = str | list[ContentPart]


class FunctionCall(RequestModel):
    """The function an assistant message asked for."""

    name: str
    arguments: str


class ToolCall(RequestModel):
    """A tool call in an assistant message."""

    id: str
    type: str = "function"
    function: FunctionCall


class SystemMessage(RequestModel):
    """Instructions from the application."""

    role: Literal["system"]
    content: Content
    name: str | None = None


class DeveloperMessage(RequestModel):
    """Instructions from the developer (the newer name for system)."""

    role: Literal["developer"]
    content: Content
    name: str | None = None


class UserMessage(RequestModel):
    """A message from the end user."""

    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(RequestModel):
    """An earlier answer of the model, possibly with tool calls."""

    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None


class ToolMessage(RequestModel):
    """The result of a tool call."""

    role: Literal["tool"]
    content: Content
    tool_call_id: str


class FunctionMessage(RequestModel):
    """The result of a (deprecated) function call."""

    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    SystemMessage
    | DeveloperMessage
    | UserMessage
    | AssistantMessage
    | ToolMessage
    | FunctionMessage,
    Field(discriminator="role"),
]
MESSAGE_ROLES: frozenset[str] = frozenset(
    {"system", "developer", "user", "assistant", "tool", "function"}
)


class FunctionDefinition(RequestModel):
    """A function the model may call."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(RequestModel):
    """A tool the model may call."""

    type: str
    function: FunctionDefinition | None = None


class StreamOptions(RequestModel):
    """Options for `stream: true`."""

    include_usage: bool | None = None


class ResponseFormat(RequestModel):
    """The answer's format: text, json_object or json_schema."""

    type: str
    json_schema: dict[str, Any] | None = None


MODEL_AND_MESSAGES = frozenset({"model", "messages"})
# Longer than any vendor's model id; bounds what a caller can put in logs and breaker names.
MAX_MODEL_LENGTH = 256


class ChatCompletionRequest(RequestModel):
    """`POST /v1/chat/completions` body."""

    model: str = Field(min_length=1, max_length=MAX_MODEL_LENGTH)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    _body: dict[str, Any] | None = PrivateAttr(default=None)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> "ChatCompletionRequest":
        """Validate a parsed JSON body and keep it, to forward upstream exactly as sent."""
        request = cls.model_validate(body)
        request._body = body
        return request

    def for_upstream(
        self, model: str, overrides: Mapping[str, Any] | None = None
    ) -> "ChatCompletionRequest":
        """This request for another model id, with parameter overrides on top of the caller's."""
        if model == self.model and not overrides:
            return self
        request = self.model_copy(update={"model": model})
        if overrides:
            body = self._body if self._body is not None else self.model_dump(exclude_unset=True)
            request._body = {**body, **overrides}
        return request

    @property
    def is_streaming(self) -> bool:
        """Whether the caller asked for server-sent events."""
        return bool(self.stream)

    @property
    def wants_stream_usage(self) -> bool:
        """Whether the caller asked for a usage chunk at the end of the stream."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def upstream_params(self) -> dict[str, Any]:
        """Every field the caller set except model and messages, unknown ones included."""
        if self._body is not None:
            return {k: v for k, v in self._body.items() if k not in MODEL_AND_MESSAGES}
        return self.model_dump(exclude_unset=True, exclude=set(MODEL_AND_MESSAGES))

    def upstream_messages(self) -> list[dict[str, Any]]:
        """The messages exactly as the caller sent them."""
        if self._body is not None:
            messages: list[dict[str, Any]] = self._body["messages"]
            return messages
        return [message.model_dump(exclude_unset=True) for message in self.messages]


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

    @property
    def id(self) -> str:
        """The completion id."""
        completion_id: str = self.data["id"]
        return completion_id

    @property
    def usage(self) -> Usage:
        """Token counts."""
        return Usage.model_validate(self.data["usage"])


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
