"""OpenAICompatProvider: OpenAI requests and replies <-> any upstream that speaks the OpenAI wire.

The adapter adapts outgoing parameters (its ParamPolicy: pass, drop or reject), maps replies to the
exact OpenAI shapes (providers/normalizer.py) and caches the model list. Its client is an
UpstreamAPI: the shared native wire for every vendor, or for Cerebras also its SDK or the mock.
"""

import asyncio
import copy
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from ai_gateway.config import constants
from ai_gateway.providers.burst import Burst, converted, is_last
from ai_gateway.providers.normalizer import ChunkNormalizer, to_completion
from ai_gateway.providers.params import ParamPolicy
from ai_gateway.providers.protocol import UpstreamAPI
from ai_gateway.providers.upstream_errors import malformed
from ai_gateway.schemas import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
    as_python,
)


class OpenAICompatProvider:
    """Serves chat completions and the model list from one OpenAI-compatible upstream."""

    def __init__(
        self,
        name: str,
        client: UpstreamAPI,
        *,
        params: ParamPolicy | None = None,
        models_ttl_s: float = constants.DEFAULT_MODELS_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._policy = params or ParamPolicy(name)
        self._client = client
        self.is_mock = client.is_mock
        self._models_ttl_s = models_ttl_s
        self._clock = clock
        self._models: tuple[float, list[ModelCard]] | None = None
        self._models_lock = asyncio.Lock()

    async def chat_completions(self, req: ChatCompletionRequest) -> ChatCompletionResponse:
        """One completion, mapped to the OpenAI schema."""
        params = self._policy.apply(req.model, req.upstream_params())
        data = await self._client.chat(req.model, req.upstream_messages(), **params)
        return to_completion(self.name, data)

    async def stream_chat_completions(
        self, req: ChatCompletionRequest
    ) -> AsyncGenerator[list[ChatCompletionChunk], None]:
        """Chunks mapped to the OpenAI schema, those that arrived together in one list; usage
        always arrives as a final usage chunk."""
        normalizer = ChunkNormalizer(self.name)
        params = {**self._policy.apply(req.model, stream_params(req)), "stream": True}
        arrivals = self._client.stream_chat(req.model, req.upstream_messages(), **params)
        async with aclosing(arrivals):
            async for arrived in arrivals:
                chunks, error = converted(arrived, normalizer.feed)
                ends = is_last(arrived) and error is None
                if ends and not normalizer.is_finished:  # found now, not after a last burst
                    ends, error = False, normalizer.unfinished()
                if chunks:
                    yield Burst(chunks, is_last=ends)
                if error is not None:
                    raise error
        normalizer.check_finished()

    async def list_models(self) -> list[ModelCard]:
        """The upstream's models, cached for the configured time."""
        async with self._models_lock:
            now = self._clock()
            if self._models is None or now - self._models[0] >= self._models_ttl_s:
                self._models = (now, model_cards(self.name, await self._client.list_models()))
            return self._models[1]

    async def aclose(self) -> None:
        """Close the client."""
        await self._client.aclose()

    def with_connect_timeout(self, seconds: float) -> "OpenAICompatProvider":
        """The same provider whose new connections give up after `seconds`."""
        variant = copy.copy(self)
        variant._client = self._client.with_connect_timeout(seconds)
        return variant


def stream_params(req: ChatCompletionRequest) -> dict[str, Any]:
    """The caller's parameters, always asking for usage so the gateway can count tokens."""
    params = req.upstream_params()
    params["stream"] = True
    caller_options = as_python(params.get("stream_options")) or {}
    params["stream_options"] = {**caller_options, "include_usage": True}
    return params


def model_cards(provider: str, entries: list[dict[str, Any]]) -> list[ModelCard]:
    """Upstream model entries as OpenAI model cards."""
    cards = []
    for entry in entries:
        if not isinstance(entry.get("id"), str):
            raise malformed(provider, "model without an id")
        created = entry.get("created")
        owner = entry.get("owned_by")
        cards.append(
            ModelCard(
                id=entry["id"],
                created=created if isinstance(created, int) else 0,
                owned_by=owner if isinstance(owner, str) else provider,
            )
        )
    return cards
