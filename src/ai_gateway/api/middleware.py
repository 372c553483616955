"""RequestContext: a pure ASGI middleware giving every request an id, a log line and a last resort.

It binds the request id into the logging context, adds `x-request-id` and `Server-Timing`
(gateway time and upstream time) to every response, writes one log line per request when the
response ends, and turns an exception nothing else handled into the generic 500 envelope (logging
its traceback once).
"""

import random
import re

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ai_gateway.api.handlers import error_response, internal_error
from ai_gateway.api.record import RequestRecord, current_record
from ai_gateway.config.constants import (
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_HEADER,
    SERVER_TIMING_HEADER,
)

log = structlog.get_logger(__name__)

SANE_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_REQUEST_ID_LENGTH}}}")


def request_id_of(scope: Scope) -> str:
    """The caller's request id if it is sane, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER.encode():
            candidate: str = value.decode("latin-1")
            if SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    # Not a secret, only unique: the PRNG is far cheaper than uuid4's system randomness here.
    return f"req_{random.getrandbits(128):032x}"


class RequestContext:
    """Request id, one log line per request, and the 500 of last resort."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(request_id_of(scope), scope["method"], scope["path"])
        header = (REQUEST_ID_HEADER.encode(), record.request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                timing = (SERVER_TIMING_HEADER.encode(), record.server_timing().encode())
                message["headers"] = [*message.get("headers", []), header, timing]
            await send(message)

        token = current_record.set(record)
        structlog.contextvars.bind_contextvars(request_id=record.request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled_error")
            if record.status is None:
                await error_response(internal_error(record.request_id))(
                    scope, receive, send_with_id
                )
        finally:
            log.info("request", **record.fields())
            structlog.contextvars.unbind_contextvars("request_id")
            current_record.reset(token)
