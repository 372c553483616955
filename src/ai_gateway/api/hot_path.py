"""HotPath: `POST .../v1/chat/completions` served straight from ASGI, in front of FastAPI.

The chat routes are the gateway's hot path. Measured on the benchmark machine, FastAPI's
middleware stack, router and dependency solving cost more CPU per request than everything
the gateway itself does. The same endpoint functions stay registered in FastAPI too, so other
methods on these paths get the usual 405; everything else is FastAPI's.
"""

import re

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from ai_gateway.api.handlers import error_response
from ai_gateway.api.routes import provider_chat_completions, unified_chat_completions
from ai_gateway.config.constants import CHAT_COMPLETIONS_PATH
from ai_gateway.errors import GatewayError

CHAT_PATH = re.compile(rf"(?:/(?P<provider_name>[^/]+))?{re.escape(CHAT_COMPLETIONS_PATH)}")


class HotPath:
    """Chat completions without FastAPI's layers; every other request goes to the app."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = CHAT_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        scope["path_params"] = {k: v for k, v in match.groupdict().items() if v is not None}
        request = Request(scope, receive)
        endpoint = provider_chat_completions if scope["path_params"] else unified_chat_completions
        try:
            response = await endpoint(request)
        except GatewayError as exc:
            response = error_response(exc)
        await response(scope, receive, send)
