"""Burst: the chunks of a stream that arrived together (one upstream read), converted as one.

A stream travels a burst at a time, from the upstream read to the caller's write, so that each
layer is passed once per read rather than once per chunk. A burst read together with the
upstream's end of stream is marked last, so that the end goes out in the same write as the
burst. A chunk that fails to convert ends the stream, but only after the chunks before it in the
same burst, as if each had come alone.
"""

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ai_gateway.errors import GatewayError

T = TypeVar("T")
R = TypeVar("R")


class Burst(list[T]):
    """Chunks that arrived together; `is_last` when the upstream's end came in the same read
    (a plain list is a burst that is not known to be the last)."""

    def __init__(self, items: Iterable[T] = (), *, is_last: bool = False) -> None:
        super().__init__(items)
        self.is_last = is_last


def is_last(chunks: list[Any]) -> bool:
    """Whether the chunks are a burst marked last."""
    return isinstance(chunks, Burst) and chunks.is_last


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
