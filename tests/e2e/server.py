"""GatewayServer: the real app under uvicorn on 127.0.0.1, on an ephemeral port, in a thread."""

import threading
import time
from types import TracebackType

import uvicorn
from openai import OpenAI
from starlette.types import ASGIApp

from ai_gateway.api.connection import server_options
from ai_gateway.config.settings import Settings
from tests.conftest import make_settings
from tests.fakes import GATEWAY_KEY


class GatewayServer:
    """Serves an app over real sockets for the duration of a `with` block.

    uvicorn gets the production options (`server_options`) for `settings`, by default the
    test settings.
    """

    def __init__(self, app: ASGIApp, *, settings: Settings | None = None) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            access_log=False,
            lifespan="on",
            **server_options(settings or make_settings()),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.port = 0
        self.url = ""

    def __enter__(self) -> "GatewayServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def connection_count(self) -> int:
        """Connections the server holds open right now."""
        return len(self._server.server_state.connections)


def openai_client(gateway: GatewayServer, prefix: str = "") -> OpenAI:
    """The official openai SDK pointed at a running gateway, strict about response shapes."""
    return OpenAI(
        base_url=f"{gateway.url}{prefix}/v1",
        api_key=GATEWAY_KEY,
        max_retries=0,
        _strict_response_validation=True,
    )
