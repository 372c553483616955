"""Token estimates from the request body alone: prompt bytes and completion limit."""

from typing import Any

import msgspec
import pytest

from ai_gateway.limits.estimate import estimate, estimate_prompt_tokens, estimate_tokens
from ai_gateway.schemas import ChatCompletionRequest

DEFAULT = 256


def request(messages: list[dict[str, Any]] | None = None, **params: Any) -> ChatCompletionRequest:
    messages = messages or [{"role": "user", "content": "Hello there"}]
    return ChatCompletionRequest.from_body({"model": "m", "messages": messages, **params})


def prompt_bytes(body: ChatCompletionRequest) -> int:
    return len(bytes(body.messages))


def test_the_prompt_is_a_quarter_of_its_bytes() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "x" * 400},
    ]
    body = request(messages)

    assert prompt_bytes(body) == len(msgspec.json.encode(messages))
    assert estimate_prompt_tokens(body) == prompt_bytes(body) // 4 + 1


def test_each_message_counts_at_least_the_chat_formats_tokens_around_it() -> None:
    empty = {"role": "user", "content": ""}
    one, many = request([empty]), request([empty] * 100)

    # OpenAI's count adds 3-4 tokens per message: its JSON alone counts more.
    assert estimate_prompt_tokens(many) - estimate_prompt_tokens(one) >= 99 * 4


def test_the_messages_are_not_decoded() -> None:
    body = ChatCompletionRequest("m", msgspec.Raw(b"not json, never read"), {"max_tokens": 10})

    assert estimate_prompt_tokens(body) == len(b"not json, never read") // 4 + 1


def test_one_call_gives_the_total_and_the_prompt() -> None:
    body = request(max_tokens=100, n=2)

    assert estimate(body, default_completion_tokens=DEFAULT) == (
        estimate_tokens(body, default_completion_tokens=DEFAULT),
        estimate_prompt_tokens(body),
    )
    assert estimate(body, default_completion_tokens=DEFAULT)[0] == (
        estimate_prompt_tokens(body) + 200
    )


def test_the_completion_limit_is_max_completion_tokens_first() -> None:
    body = request(max_completion_tokens=100, max_tokens=500)

    assert estimate_tokens(body, default_completion_tokens=DEFAULT) == (
        estimate_prompt_tokens(body) + 100
    )


def test_max_tokens_counts_when_it_is_the_only_limit() -> None:
    body = request(max_tokens=500, max_completion_tokens=None)

    assert estimate_tokens(body, default_completion_tokens=DEFAULT) == (
        estimate_prompt_tokens(body) + 500
    )


def test_without_a_limit_the_default_counts() -> None:
    body = request()

    assert estimate_tokens(body, default_completion_tokens=DEFAULT) == (
        estimate_prompt_tokens(body) + DEFAULT
    )


@pytest.mark.parametrize("value", [-1, 1.5, True, "100", [100], {"n": 1}])
def test_a_limit_that_is_no_count_falls_back_to_the_default(value: Any) -> None:
    valid = request()
    body = ChatCompletionRequest(valid.model, valid.messages, {"max_tokens": value})

    assert estimate_tokens(body, default_completion_tokens=DEFAULT) == (
        estimate_prompt_tokens(body) + DEFAULT
    )


def test_a_limit_given_as_an_override_counts() -> None:
    body = request(max_tokens=500).for_upstream("other", {"max_tokens": 50})

    assert estimate_tokens(body, default_completion_tokens=DEFAULT) == (
        estimate_prompt_tokens(body) + 50
    )


def test_each_of_n_completions_may_use_the_whole_limit() -> None:
    body = request(max_tokens=100, n=3)
    zero = request(max_tokens=100, n=0)

    assert estimate_tokens(body, default_completion_tokens=DEFAULT) == (
        estimate_prompt_tokens(body) + 300
    )
    assert estimate_tokens(zero, default_completion_tokens=DEFAULT) == (
        estimate_prompt_tokens(zero) + 100
    )


def test_a_zero_limit_counts_the_prompt_only() -> None:
    body = request(max_completion_tokens=0)

    assert estimate_tokens(body, default_completion_tokens=DEFAULT) == estimate_prompt_tokens(body)
