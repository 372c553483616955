"""Fakes and payload builders shared by the test layers."""

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ai_gateway.providers.normalizer import ChunkNormalizer, to_completion
from ai_gateway.schemas import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
)

GATEWAY_KEY = "sk-test-gateway-key"
UPSTREAM_KEY = "csk-test-upstream-key-0123456789"
MODEL = "gpt-oss-120b"


def chat_body(**overrides: Any) -> dict[str, Any]:
    """A minimal valid chat request body."""
    return {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], **overrides}


def chat_request(**overrides: Any) -> ChatCompletionRequest:
    """A validated chat request."""
    return ChatCompletionRequest.from_body(chat_body(**overrides))


def completion_payload(text: str = "hi there", **overrides: Any) -> dict[str, Any]:
    """A raw Cerebras-style completion (no logprobs, no refusal), as the upstream sends it."""
    return {
        "id": "chatcmpl-upstream-1",
        "choices": [
            {"finish_reason": "stop", "index": 0, "message": {"role": "assistant", "content": text}}
        ],
        "created": 1761231230,
        "model": MODEL,
        "system_fingerprint": "fp_upstream",
        "object": "chat.completion",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "time_info": {"queue_time": 0.0001, "total_time": 0.006, "created": 1761231230.53},
        **overrides,
    }


NORMALISED_COMPLETION = {
    "id": "chatcmpl-upstream-1",
    "object": "chat.completion",
    "created": 1761231230,
    "model": MODEL,
    "system_fingerprint": "fp_upstream",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    "time_info": {"queue_time": 0.0001, "total_time": 0.006, "created": 1761231230.53},
}
"""completion_payload() as the gateway returns it: OpenAI's required nulls filled in."""


def chunk_payloads(
    pieces: Sequence[str] = ("Hel", "lo"), *, finish: str = "stop"
) -> list[dict[str, Any]]:
    """Raw Cerebras-style chunks: role, content pieces, empty delta, finish with usage."""
    head = {
        "id": "chatcmpl-upstream-2",
        "created": 1761231233,
        "model": MODEL,
        "system_fingerprint": "fp_upstream",
        "object": "chat.completion.chunk",
    }
    deltas = [{"role": "assistant"}, *({"content": p} for p in pieces), {}]
    chunks = [{**head, "choices": [{"delta": d, "index": 0}]} for d in deltas]
    usage = {"prompt_tokens": 3, "completion_tokens": len(pieces), "total_tokens": 3 + len(pieces)}
    final = {"delta": {}, "finish_reason": finish, "index": 0}
    return [*chunks, {**head, "choices": [final], "usage": usage, "time_info": {"total_time": 0.1}}]


@dataclass
class FakeProvider:
    """A scripted ChatProvider: records requests, replies with canned payloads or errors."""

    name: str = "cerebras"
    is_mock: bool = False
    completion: dict[str, Any] = field(default_factory=completion_payload)
    chunks: list[dict[str, Any]] = field(default_factory=chunk_payloads)
    error: Exception | None = None
    fail_after: int | None = None
    models: list[ModelCard] = field(
        default_factory=lambda: [ModelCard(id=MODEL, owned_by="cerebras")]
    )
    requests: list[ChatCompletionRequest] = field(default_factory=list)
    streams_closed: int = 0

    async def chat_completions(self, req: ChatCompletionRequest) -> ChatCompletionResponse:
        self.requests.append(req)
        if self.error is not None:
            raise self.error
        return to_completion(self.name, self.completion)

    async def stream_chat_completions(
        self, req: ChatCompletionRequest
    ) -> AsyncGenerator[list[ChatCompletionChunk], None]:
        self.requests.append(req)
        normalizer = ChunkNormalizer(self.name)
        try:
            for index, data in enumerate(self.chunks):
                if self.error is not None and self.fail_after == index:
                    raise self.error
                if chunks := normalizer.feed(data):
                    yield chunks
            if self.error is not None and self.fail_after is None:
                raise self.error
        finally:
            self.streams_closed += 1

    async def list_models(self) -> list[ModelCard]:
        if self.error is not None:
            raise self.error
        return self.models

    def with_connect_timeout(self, seconds: float) -> "FakeProvider":
        return self

    async def aclose(self) -> None:
        return None
