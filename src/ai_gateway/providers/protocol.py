"""The ChatProvider and UpstreamAPI protocols: what the router needs from a provider, and what a
provider needs from its client."""

from collections.abc import AsyncGenerator
from typing import Any, Protocol

import msgspec

from ai_gateway.schemas import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
)


class ChatProvider(Protocol):
    """What the routes need from an upstream: completions, streams and its model list."""

    name: str
    is_mock: bool

    async def chat_completions(self, req: ChatCompletionRequest) -> ChatCompletionResponse:
        """One non-streaming completion."""
        ...

    def stream_chat_completions(
        self, req: ChatCompletionRequest
    ) -> AsyncGenerator[list[ChatCompletionChunk], None]:
        """The completion's chunks as they arrive, a list of those that arrived together
        (never an empty list); closing the iterator closes the upstream."""
        ...

    async def list_models(self) -> list[ModelCard]:
        """The models this provider serves, with bare ids."""
        ...

    def with_connect_timeout(self, seconds: float) -> "ChatProvider":
        """The same provider whose new upstream connections give up after `seconds`."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class UpstreamAPI(Protocol):
    """An upstream as JSON objects in and out: the native wire, the Cerebras SDK, the mock."""

    is_mock: bool

    async def chat(self, model: str, messages: msgspec.Raw, **params: Any) -> dict[str, Any]:
        """One completion as the upstream's JSON object."""
        ...

    def stream_chat(
        self, model: str, messages: msgspec.Raw, **params: Any
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The completion's chunks as JSON objects, a list of those that arrived together
        (never an empty list); closing the iterator closes the upstream."""
        ...

    async def list_models(self) -> list[dict[str, Any]]:
        """The upstream's model list entries."""
        ...

    def with_connect_timeout(self, seconds: float) -> "UpstreamAPI":
        """The same upstream whose new connections give up after `seconds`."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
