"""Token estimates before the call, without a tokenizer: what a request reserves against a
tokens-per-minute limit until its real usage settles it. O(1) per request: nothing is decoded."""

from typing import Any

from ai_gateway.schemas import ChatCompletionRequest, as_python

BYTES_PER_TOKEN = 4
"""English text averages about 4 characters per token; JSON punctuation makes this generous.
https://help.openai.com/en/articles/4936856-what-are-tokens-and-how-to-count-them"""
COMPLETION_LIMITS = ("max_completion_tokens", "max_tokens")
"""The newer field wins when both are set, as in OpenAI's API."""


def estimate(body: ChatCompletionRequest, *, default_completion_tokens: int) -> tuple[int, int]:
    """(total, prompt): the most tokens the request may use (its prompt plus every completion
    at its limit), and the prompt's share of them."""
    prompt = estimate_prompt_tokens(body)
    completion = completion_limit(body.params, default=default_completion_tokens)
    return prompt + choices(body.params) * completion, prompt


def estimate_prompt_tokens(body: ChatCompletionRequest) -> int:
    """The prompt's size in tokens, from the byte length of its raw `messages` JSON (also what
    a request cancelled before any usage is charged).

    Each message's own JSON (`{"role":"user","content":""},`: 29 bytes, so 7 tokens here)
    counts a little more than the chat format's tokens around a message (3-4 in OpenAI's
    count) and stands in for them: no per-message allowance, so nothing is decoded to count
    the messages.
    https://cookbook.openai.com/examples/how_to_count_tokens_with_tiktoken
    """
    return len(body.messages) // BYTES_PER_TOKEN + 1


def estimate_tokens(body: ChatCompletionRequest, *, default_completion_tokens: int) -> int:
    """The most tokens the request may use: its prompt plus every completion at its limit."""
    return estimate(body, default_completion_tokens=default_completion_tokens)[0]


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
