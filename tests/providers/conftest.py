"""Real-mode clients over both transports (the native wire, the Cerebras SDK), built with the
limits and the redactor a test asks for, and closed after it."""

from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from ai_gateway.providers.cerebras_client import CerebrasClient
from ai_gateway.providers.protocol import UpstreamAPI
from ai_gateway.providers.upstream_limits import UpstreamLimits
from ai_gateway.providers.wire import OpenAIWire, WireClient
from ai_gateway.redaction import Redactor
from tests.fakes import UPSTREAM_KEY


class UpstreamFactory(Protocol):
    """Builds one real-mode client of the fake upstream at `base_url`."""

    def __call__(
        self,
        base_url: str,
        *,
        limits: UpstreamLimits | None = None,
        redactor: Redactor | None = None,
        timeout: float = 2.0,
    ) -> UpstreamAPI: ...


@pytest.fixture(params=["native", "sdk"])
async def make_upstream(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamFactory]:
    """A factory of clients over the parametrized transport."""
    clients: list[UpstreamAPI] = []
    wires: list[WireClient] = []

    def make(
        base_url: str,
        *,
        limits: UpstreamLimits | None = None,
        redactor: Redactor | None = None,
        timeout: float = 2.0,
    ) -> UpstreamAPI:
        client: UpstreamAPI
        if request.param == "sdk":
            client = CerebrasClient(
                UPSTREAM_KEY, base_url=base_url, timeout=timeout, limits=limits, redactor=redactor
            )
        else:
            wires.append(WireClient(timeout=timeout, limits=limits, redactor=redactor))
            client = OpenAIWire(
                wires[-1], provider="cerebras", base_url=f"{base_url}/v1", api_key=UPSTREAM_KEY
            )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for wire in wires:
        await wire.aclose()
