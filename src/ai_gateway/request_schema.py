"""The shape a chat request must have, as msgspec Structs: what the gateway validates a body
against, and what its OpenAPI document publishes.

The shapes only validate: a body is checked against them and then forwarded as the caller's
own bytes (schemas.ChatCompletionRequest), so nothing is rebuilt per message. Unknown fields
are accepted at every level (they travel upstream untouched); known fields are typed strictly:
`"temperature": "1"` is the caller's error, not something to coerce.
"""

from typing import Annotated, Any

import msgspec


class Shape(msgspec.Struct, kw_only=True):
    """Base of the shapes: unknown fields allowed (and left to the forwarded bytes)."""


class ContentPart(Shape):
    """One part of a message's content: text, image_url, input_audio, file, ..."""

    type: str
    text: str | None = None

    def __post_init__(self) -> None:
        if self.type == "text" and self.text is None:
            raise ValueError("a content part of type 'text' needs a 'text' string")


Content = str | list[ContentPart]


class FunctionCall(Shape):
    """The function an assistant message asked for."""

    name: str
    arguments: str


class ToolCall(Shape):
    """A tool call in an assistant message."""

    id: str
    function: FunctionCall
    type: str = "function"


class SystemMessage(Shape, tag_field="role", tag="system"):
    """Instructions from the application."""

    content: Content
    name: str | None = None


class DeveloperMessage(Shape, tag_field="role", tag="developer"):
    """Instructions from the developer (the newer name for system)."""

    content: Content
    name: str | None = None


class UserMessage(Shape, tag_field="role", tag="user"):
    """A message from the end user."""

    content: Content
    name: str | None = None


class AssistantMessage(Shape, tag_field="role", tag="assistant"):
    """An earlier answer of the model, possibly with tool calls."""

    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None


class ToolMessage(Shape, tag_field="role", tag="tool"):
    """The result of a tool call."""

    content: Content
    tool_call_id: str


class FunctionMessage(Shape, tag_field="role", tag="function"):
    """The result of a (deprecated) function call."""

    content: str | None
    name: str


Message = (
    SystemMessage
    | DeveloperMessage
    | UserMessage
    | AssistantMessage
    | ToolMessage
    | FunctionMessage
)


class FunctionDefinition(Shape):
    """A function the model may call."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Shape):
    """A tool the model may call."""

    type: str
    function: FunctionDefinition | None = None


class StreamOptions(Shape):
    """Options for `stream: true`."""

    include_usage: bool | None = None


class ResponseFormat(Shape):
    """The answer's format: text, json_object or json_schema."""

    type: str
    json_schema: dict[str, Any] | None = None


# Longer than any vendor's model id; printable ASCII, so that an id is safe in logs and in the
# response header that names the deployment.
ModelId = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[\x20-\x7e]+$")]


class ChatRequestShape(Shape):
    """`POST /v1/chat/completions` body."""

    model: ModelId
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
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


SHAPE_DECODER = msgspec.json.Decoder(ChatRequestShape)
FIELDS_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])


def schema_components(ref_template: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request's JSON Schema as a reference and the named schemas it uses."""
    (reference,), components = msgspec.json.schema_components(
        [ChatRequestShape], ref_template=ref_template
    )
    return reference, components
