"""Burst: the chunks of a stream that arrived together (one upstream read), converted as one.

A stream travels a burst at a time, from the upstream read to the caller's write, so that each
layer is passed once per read rather than once per chunk. A chunk that fails to convert ends the
stream, but only after the chunks before it in the same burst, as if each had come alone.
"""

from collections.abc import Callable, Iterable
from typing import TypeVar

from ai_gateway.errors import GatewayError

T = TypeVar("T")
R = TypeVar("R")


def converted(
    items: Iterable[T], convert: Callable[[T], Iterable[R]]
) -> tuple[list[R], GatewayError | None]:
    """Every item's conversions in order, up to the first item that fails, and its error."""
    out: list[R] = []
    for item in items:
        try:
            out.extend(convert(item))
        except GatewayError as error:
            return out, error
    return out, None
