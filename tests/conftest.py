"""Shared fixtures: hermetic settings, the fake upstream, a no-network guard."""

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ai_gateway.app import create_app
from ai_gateway.config.file import GatewayConfig, RoutingConfig
from ai_gateway.config.settings import Settings, variable_names
from ai_gateway.providers.registry import Registry
from ai_gateway.providers.specs import SPECS
from tests.fake_upstream import FakeUpstream
from tests.fakes import GATEWAY_KEY, FakeProvider

if TYPE_CHECKING:  # imported by the fixtures that use it: no test loads redis unasked
    import redis.asyncio

ONE_ATTEMPT = GatewayConfig(routing=RoutingConfig(retries=0))
# Derived, so a new setting or vendor is cleaned too: every Settings field's variable and every
# spec's `<NAME>_API_KEY` / `<NAME>_BASE_URL`.
GATEWAY_VARIABLES = (
    *variable_names(),
    *(variable for spec in SPECS for variable in (spec.key_variable, spec.base_url_variable)),
)


def is_loopback(address: Any) -> bool:
    """Whether a socket address stays on this machine."""
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    """Refuse any connection that would leave 127.0.0.1."""
    original = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        if not is_loopback(address):
            raise ConnectionRefusedError(f"tests may not connect to {address!r}")
        original(self, address)

    socket.socket.connect = guarded  # type: ignore[method-assign]
    yield
    socket.socket.connect = original  # type: ignore[method-assign]


def clean_environment(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """No gateway variable set, and a working directory without `.env`."""
    for name in GATEWAY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(directory)


@pytest.fixture(autouse=True, scope="session")
def _clean_session_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module- and session-scoped fixtures (gateways built once per module) start clean too:
    they are set up before any test's own `_clean_environment`."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        clean_environment(monkeypatch, tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see no gateway variables and no `.env` unless they set them."""
    clean_environment(monkeypatch, tmp_path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: one known gateway key, real mode off unless asked."""
    values: dict[str, Any] = {"gateway_api_keys": GATEWAY_KEY, "ci": False, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake_upstream(fake_upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    """The session's fake upstream, emptied before and after each test."""
    fake_upstream_server.reset()
    yield fake_upstream_server
    fake_upstream_server.reset()


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


def app_client(app: Any, key: str | None) -> httpx.AsyncClient:
    """An HTTP client of an app over httpx's in-process transport; `key=None` sends no
    Authorization."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers)


@asynccontextmanager
async def serve_app(
    settings: Settings,
    registry: Registry,
    *,
    key: str | None = GATEWAY_KEY,
    config: GatewayConfig = ONE_ATTEMPT,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app over an in-process transport; `key=None` sends no Authorization.

    By default each request makes one attempt, so route tests see each upstream failure as is.
    """
    async with app_client(create_app(settings, registry=registry, config=config), key) as http:
        yield http


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run the app's start-up before the block and its shutdown after, as a server would
    (httpx's in-process transport does neither)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.ensure_future(app({"type": "lifespan"}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        await task
        raise RuntimeError(started.get("message", "start-up failed"))
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        stopped = await outbox.get()
        await task
        if stopped["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(stopped.get("message", "shutdown failed"))


@asynccontextmanager
async def started_app(
    settings: Settings,
    registry: Registry,
    *,
    key: str | None = GATEWAY_KEY,
    config: GatewayConfig = ONE_ATTEMPT,
) -> AsyncIterator[httpx.AsyncClient]:
    """Like `serve_app`, with the app's start-up and shutdown run around the block (the
    database opened, keys loaded, limits connected)."""
    app = create_app(settings, registry=registry, config=config)
    async with lifespan(app), app_client(app, key) as http:
        yield http


@pytest.fixture
async def client(settings: Settings, provider: FakeProvider) -> AsyncIterator[httpx.AsyncClient]:
    """The app serving the FakeProvider, with a valid key."""
    async with serve_app(settings, Registry({provider.name: provider})) as http:
        yield http


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of its own on the test Redis; its keys are deleted afterwards."""
    from tests.services import redis_prefix

    with redis_prefix() as name:
        yield name


@pytest.fixture
async def gateway_redis() -> AsyncIterator["redis.asyncio.Redis"]:
    """A client of the test Redis made as the gateway makes its own (`redis_client`)."""
    from ai_gateway.limits.redis_store import redis_client
    from tests.services import REDIS_URL

    made = redis_client(REDIS_URL, timeout_s=2.0)
    try:
        yield made
    finally:
        await made.aclose()
