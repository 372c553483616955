"""Token estimates before the call, without a tokenizer: what a request reserves against a
tokens-per-minute limit until its real usage settles it."""

from typing import Any

import msgspec

from ai_gateway.schemas import ChatCompletionRequest, as_python

BYTES_PER_TOKEN = 4
"""English text averages about 4 characters per token; JSON punctuation makes this generous.
https://help.openai.com/en/articles/4936856-what-are-tokens-and-how-to-count-them"""
TOKENS_PER_MESSAGE = 4
"""The chat format's own tokens around each message (role, separators): 3-4 in OpenAI's count.
https://cookbook.openai.com/examples/how_to_count_tokens_with_tiktoken"""
COMPLETION_LIMITS = ("max_completion_tokens", "max_tokens")
"""The newer field wins when both are set, as in OpenAI's API."""
MESSAGES_DECODER = msgspec.json.Decoder(list[msgspec.Raw])


def estimate_prompt_tokens(body: ChatCompletionRequest) -> int:
    """The prompt's size in tokens, from the bytes of its messages plus a per-message allowance
    (also what a request cancelled before any usage is charged)."""
    messages = len(MESSAGES_DECODER.decode(body.messages))
    return len(body.messages) // BYTES_PER_TOKEN + 1 + TOKENS_PER_MESSAGE * messages


def completion_limit(params: dict[str, Any], *, default: int) -> int:
    """The completion tokens the request allows: the first valid limit it sets, else `default`."""
    for name in COMPLETION_LIMITS:
        value = as_python(params.get(name))
        if is_count(value):
            return int(value)
    return default


def choices(params: dict[str, Any]) -> int:
    """How many completions the request asks for (`n`); each may use the whole limit."""
    value = as_python(params.get("n"))
    return int(value) if is_count(value) and value > 0 else 1


def is_count(value: object) -> bool:
    """Whether a value is a non-negative integer (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def estimate_tokens(body: ChatCompletionRequest, *, default_completion_tokens: int) -> int:
    """The most tokens the request may use: its prompt plus every completion at its limit."""
    completion = completion_limit(body.params, default=default_completion_tokens)
    return estimate_prompt_tokens(body) + choices(body.params) * completion
