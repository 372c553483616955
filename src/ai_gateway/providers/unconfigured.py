"""UnconfiguredProvider: stands in for a provider that has no credentials in this deployment."""

from collections.abc import AsyncGenerator

from ai_gateway.config.constants import SHOULD_RETRY_HEADER
from ai_gateway.errors import ProviderNotConfigured
from ai_gateway.schemas import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
)


class UnconfiguredProvider:
    """Answers 503 provider_not_configured to every call; lists no models."""

    is_mock = False

    def __init__(self, name: str, *, key_variable: str) -> None:
        self.name = name
        self.key_variable = key_variable

    def _error(self) -> ProviderNotConfigured:
        return ProviderNotConfigured(
            f"Provider '{self.name}' is not configured: set {self.key_variable} on the gateway.",
            headers={SHOULD_RETRY_HEADER: "false"},
        )

    async def chat_completions(self, req: ChatCompletionRequest) -> ChatCompletionResponse:
        """Always 503."""
        raise self._error()

    async def stream_chat_completions(
        self, req: ChatCompletionRequest
    ) -> AsyncGenerator[list[ChatCompletionChunk], None]:
        """Always 503, before any chunk."""
        raise self._error()
        yield  # pragma: no cover  # makes this an async generator like every other provider

    async def list_models(self) -> list[ModelCard]:
        """No models."""
        return []

    def with_connect_timeout(self, seconds: float) -> "UnconfiguredProvider":
        """Connects to nothing."""
        return self

    async def aclose(self) -> None:
        """Nothing to release."""
