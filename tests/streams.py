"""Reading a stream in tests: its chunks come a list at a time (those that arrived together)."""

from collections.abc import AsyncGenerator
from typing import TypeVar

T = TypeVar("T")


async def drain(stream: AsyncGenerator[list[T], None], received: list[T]) -> None:
    """Append every chunk of `stream` to `received` until it ends or fails."""
    async for arrived in stream:
        received.extend(arrived)
