"""One OpenAICompatSpec per OpenAI-compatible vendor: where it lives and what it rejects.

A vendor is served once its key is set (`<NAME>_API_KEY`), or, for local servers that need no
key, once its base URL is set (`<NAME>_BASE_URL`). `<NAME>_BASE_URL` also overrides the base
URL of any hosted vendor (a proxy, a region). Both names follow the spec's name, so a new
vendor is one spec here (and a test), nothing else.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class OpenAICompatSpec:
    """An OpenAI-compatible vendor."""

    name: str
    base_url: str
    requires_key: bool = True
    unsupported_params: frozenset[str] = frozenset()
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def key_variable(self) -> str:
        """The environment variable that holds the vendor's key: `<NAME>_API_KEY`."""
        return f"{self.name.upper()}_API_KEY"

    @property
    def base_url_variable(self) -> str:
        """The environment variable that overrides the base URL: `<NAME>_BASE_URL`."""
        return f"{self.name.upper()}_BASE_URL"


SPECS: tuple[OpenAICompatSpec, ...] = (
    OpenAICompatSpec("openai", "https://api.openai.com/v1"),
    # Groq answers 400 to these: https://console.groq.com/docs/openai
    OpenAICompatSpec(
        "groq",
        "https://api.groq.com/openai/v1",
        unsupported_params=frozenset({"logprobs", "logit_bias", "top_logprobs"}),
    ),
    OpenAICompatSpec("together", "https://api.together.xyz/v1"),
    OpenAICompatSpec("fireworks", "https://api.fireworks.ai/inference/v1"),
    OpenAICompatSpec("deepinfra", "https://api.deepinfra.com/v1/openai"),
    # Attribution headers: https://openrouter.ai/docs/api-reference/overview
    OpenAICompatSpec(
        "openrouter",
        "https://openrouter.ai/api/v1",
        headers=MappingProxyType({"X-Title": "ai_gateway"}),
    ),
    OpenAICompatSpec("mistral", "https://api.mistral.ai/v1"),
    OpenAICompatSpec("xai", "https://api.x.ai/v1"),
    OpenAICompatSpec("deepseek", "https://api.deepseek.com/v1"),
    # https://ai.google.dev/gemini-api/docs/openai
    OpenAICompatSpec("gemini", "https://generativelanguage.googleapis.com/v1beta/openai"),
    # https://docs.anthropic.com/en/api/openai-sdk
    OpenAICompatSpec("anthropic", "https://api.anthropic.com/v1"),
    OpenAICompatSpec("ollama", "http://127.0.0.1:11434/v1", requires_key=False),
    OpenAICompatSpec("vllm", "http://127.0.0.1:8000/v1", requires_key=False),
    OpenAICompatSpec("lmstudio", "http://127.0.0.1:1234/v1", requires_key=False),
)
