"""Running gateways: real mode against the fake upstream, and mock mode."""

from collections.abc import Iterator

import pytest

from ai_gateway.app import create_app
from ai_gateway.config.settings import Settings
from tests.conftest import ONE_ATTEMPT, make_settings
from tests.e2e.server import GatewayServer
from tests.fake_upstream import FakeUpstream
from tests.fakes import UPSTREAM_KEY

UPSTREAM_TIMEOUT_S = 1.0


@pytest.fixture(scope="module", params=["native", "sdk"])
def real_gateway(
    fake_upstream_server: FakeUpstream, request: pytest.FixtureRequest
) -> Iterator[GatewayServer]:
    """Cerebras in real mode over each transport, upstream = the fake (URL given with /v1)."""
    base_url = fake_upstream_server.url + "/v1/"
    settings = real_mode(request.param, base_url=base_url, timeout=UPSTREAM_TIMEOUT_S)
    with GatewayServer(create_app(settings, config=ONE_ATTEMPT)) as server:
        yield server


def real_mode(transport: str, *, base_url: str, timeout: float) -> Settings:
    """Settings for Cerebras in real mode over `transport` against the fake upstream."""
    return make_settings(
        cerebras_client=transport,
        cerebras_mock="false",
        cerebras_api_key=UPSTREAM_KEY,
        cerebras_base_url=base_url,
        request_timeout_s=timeout,
    )


@pytest.fixture(scope="module")
def mock_gateway() -> Iterator[GatewayServer]:
    """Cerebras in mock mode."""
    with GatewayServer(
        create_app(make_settings(cerebras_mock="true"), config=ONE_ATTEMPT)
    ) as server:
        yield server
