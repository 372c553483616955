"""RequestObserver: what watches every request, told when it starts and when it has ended."""

from collections.abc import Sequence
from typing import Protocol

from ai_gateway.api.record import RequestRecord

Headers = Sequence[tuple[bytes, bytes]]
"""The request's headers as the server gives them (lower-case names)."""


class RequestObserver(Protocol):
    """Told of each HTTP request twice: when its record is made and once its response has ended
    (ledger entry written, cost known), before its log line."""

    def started(self, record: RequestRecord, headers: Headers) -> None:
        """The request has begun."""
        ...

    def finished(self, record: RequestRecord) -> None:
        """The request has ended, however it ended."""
        ...
