"""RequestObserver: what watches every request, told when it starts and when it has ended."""

from typing import Protocol

from ai_gateway.api.record import RequestRecord


class RequestObserver(Protocol):
    """Told of each HTTP request twice: when its record is made and once its response has ended
    (ledger entry written, cost known), before its log line."""

    def started(self, record: RequestRecord) -> None:
        """The request has begun."""
        ...

    def finished(self, record: RequestRecord) -> None:
        """The request has ended, however it ended."""
        ...
