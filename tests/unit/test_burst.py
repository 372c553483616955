"""converted: a burst's chunks up to the first that fails, and its error."""

from ai_gateway.errors import GatewayError, ProviderError
from ai_gateway.providers.burst import converted


def doubled(value: int) -> list[int]:
    if value < 0:
        raise ProviderError("a bad chunk")
    return [value, value]


def test_the_chunks_before_a_failing_one_are_kept_with_its_error() -> None:
    chunks, error = converted([1, 2, -1, 3], doubled)

    assert chunks == [1, 1, 2, 2]
    assert isinstance(error, GatewayError)
    assert error.message == "a bad chunk"


def test_a_burst_that_converts_whole_has_no_error() -> None:
    assert converted([1, 2], doubled) == ([1, 1, 2, 2], None)
    assert converted([], doubled) == ([], None)
