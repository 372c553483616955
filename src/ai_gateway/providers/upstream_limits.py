"""UpstreamLimits: how many upstream connections the gateway holds and how much of a reply it
reads."""

from dataclasses import dataclass

from ai_gateway.config import constants


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """Connection pool size, and the largest JSON reply and stream event (decompressed) read."""

    max_connections: int = constants.DEFAULT_UPSTREAM_MAX_CONNECTIONS
    max_response_bytes: int = constants.DEFAULT_MAX_UPSTREAM_RESPONSE_BYTES
    max_event_bytes: int = constants.DEFAULT_MAX_UPSTREAM_EVENT_BYTES
