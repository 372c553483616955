"""Gateway: the one way in. Every HTTP request walks the same steps, in this order:

request id and record -> route and method -> key (the caller's, or an admin's) -> the path's
provider -> body (content type, size) -> the endpoint -> one error renderer -> the caller's
ticket settled -> one log line.

Per-caller concerns hook in at `_respond` and `_serve`, the one seam every route passes: the key
resolves to a Caller (key id, team, models, limits) on the record; the chat endpoint admits a
limited caller's request (a Ticket, or a 429) before any upstream call; the ticket's
`x-ratelimit-*` headers go on the response head and it is settled, once, when the response has
ended however it ended. Once the body has been read, the request watches its connection: a
caller that leaves cancels the request's work (routing, upstream calls, the stream) and is
logged as `client_closed`.
"""

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ai_gateway.api.auth import authenticate, bearer_token
from ai_gateway.api.body import check_content_type, read_body
from ai_gateway.api.connection import ARRIVED, HOLD_HEAD, LEAVE, Leave
from ai_gateway.api.record import RequestRecord
from ai_gateway.api.renderer import error_response, internal_error
from ai_gateway.api.routes import Access, Call, Routes
from ai_gateway.config.constants import (
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_HEADER,
    SERVER_TIMING_HEADER,
)
from ai_gateway.errors import GatewayError
from ai_gateway.keys.directory import KeyDirectory
from ai_gateway.keys.static import KeyStore
from ai_gateway.logs import info_line
from ai_gateway.observability.observer import RequestObserver
from ai_gateway.providers.registry import Registry
from ai_gateway.usage.ledger import Ledger

log = structlog.get_logger(__name__)

SANE_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_REQUEST_ID_LENGTH}}}")
REQUEST_ID = REQUEST_ID_HEADER.encode()
SERVER_TIMING = SERVER_TIMING_HEADER.encode()


def request_id_of(scope: Scope) -> str:
    """The caller's request id if it is sane, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID:
            candidate: str = value.decode("latin-1")
            if SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    # Not a secret, only unique: the PRNG is far cheaper than uuid4's system randomness here.
    return f"req_{random.getrandbits(128):032x}"


AUTHORIZATION, CONTENT_TYPE, CONTENT_LENGTH = b"authorization", b"content-type", b"content-length"
HEAD_FIELDS = (AUTHORIZATION, CONTENT_TYPE, CONTENT_LENGTH)


def head_fields(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """The headers the dispatch reads (each one's first value), in one pass over the head:
    Starlette's `Headers` would be built, then scanned once per look-up."""
    found: dict[bytes, str] = {}
    for name, value in headers:
        if name in HEAD_FIELDS and name not in found:
            found[name] = value.decode("latin-1")
    return found


def watch_disconnect(scope: Scope, receive: Receive, record: RequestRecord) -> Callable[[], object]:
    """Cancel the running request if its caller goes away before the response has ended, and
    return what stops watching. The connection tells (`LEAVE`, api/connection.py); under a
    server that does not, a task reads `receive` until `http.disconnect` (servers also report
    one once the response is complete: not a leave)."""
    request = asyncio.current_task()

    def leave() -> None:
        if not record.is_finished and request is not None:
            record.is_client_closed = True
            request.cancel()

    notice = scope.get(LEAVE)
    if isinstance(notice, Leave):
        notice.watch(leave)
        return notice.stop

    async def wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        leave()

    return asyncio.ensure_future(wait()).cancel


class Gateway:
    """The ASGI application: lifespan, and every HTTP request through one dispatch."""

    def __init__(
        self,
        routes: Routes,
        *,
        keys: KeyDirectory,
        admin_keys: KeyStore,
        registry: Registry,
        max_request_bytes: int,
        ledger: Ledger,
        observers: Sequence[RequestObserver] = (),
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.routes = routes
        self.keys = keys
        self.admin_keys = admin_keys
        self.registry = registry
        self.max_request_bytes = max_request_bytes
        self.ledger = ledger
        self.observers = tuple(observers)
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Open what needs a running loop (the database, key cache, limits store) before
        serving; release connections at the end. A failed start-up names its reason."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._on_startup is not None:
                        await self._on_startup()
                except Exception as exc:
                    log.error("startup_failed", reason=str(exc))
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.routes.ready = False
                try:
                    if self._on_shutdown is not None:
                        await self._on_shutdown()
                except Exception as exc:
                    log.exception("shutdown_failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request: its record, its response, its log line, whatever happens."""
        started = scope.get(ARRIVED) or time.perf_counter()
        record = RequestRecord(request_id_of(scope), scope["method"], scope["path"], started)
        structlog.contextvars.bind_contextvars(request_id=record.request_id)
        framed = self._framing(
            record, send, is_head=scope["method"] == "HEAD", hold_head=scope.get(HOLD_HEAD)
        )
        for observer in self.observers:
            observer.started(record, scope["headers"])
        try:
            await self._serve(scope, receive, framed, record)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not record.is_client_closed or task is None or task.uncancel() > 0:
                raise
        except ClientDisconnect:  # the caller left while sending its body
            record.is_client_closed = True
        except Exception:
            log.exception("unhandled_error")
            if record.status is None:
                await error_response(internal_error(record.request_id), record)(
                    scope, receive, framed
                )
        finally:
            for observer in self.observers:
                observer.finished(record)
            info_line("request", record.fields())
            structlog.contextvars.unbind_contextvars("request_id")

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, record: RequestRecord
    ) -> None:
        """The response for the request, or its error in the envelope (an unexpected failure
        before the response began: a 500, so the ledger enters what the caller got); the
        connection is watched from the end of the body to the end of the response."""
        watch: list[Callable[[], object]] = []
        try:
            try:
                response = await self._respond(Request(scope, receive), record, watch)
            except GatewayError as error:
                response = error_response(error, record)
            except ClientDisconnect:
                raise
            except Exception:
                log.exception("unhandled_error")
                response = error_response(internal_error(record.request_id), record)
            await response(scope, receive, send)
        finally:
            for stop in watch:
                stop()
            try:
                self.ledger.settle(record)
            finally:
                if record.ticket is not None:
                    record.ticket.settle(record)

    async def _respond(
        self, request: Request, record: RequestRecord, watch: list[Callable[[], object]]
    ) -> Response:
        """The one seam: route, key (its Caller on the record), provider, body, the endpoint."""
        scope = request.scope
        endpoint, provider_name = self.routes.match(scope["method"], scope["path"])
        head = head_fields(scope["headers"])
        if endpoint.access is Access.CALLER:
            token = bearer_token(head.get(AUTHORIZATION))
            record.caller = await self.keys.caller(token)
        elif endpoint.access is Access.ADMIN:
            authenticate(self.admin_keys, head.get(AUTHORIZATION))
        provider = None if provider_name is None else self.registry.provider(provider_name)
        body = b""
        if endpoint.reads_body:
            check_content_type(head.get(CONTENT_TYPE))
            body = await read_body(
                request.receive, head.get(CONTENT_LENGTH), self.max_request_bytes
            )
        watch.append(watch_disconnect(scope, request.receive, record))
        return await endpoint.handle(Call(request, record, provider, body))

    def _framing(
        self,
        record: RequestRecord,
        send: Send,
        *,
        is_head: bool,
        hold_head: Callable[[], None] | None,
    ) -> Send:
        """`send` adding the request id and Server-Timing to the head, noting the status, the
        first byte and the end of the response (the ledger entry is written before the last
        byte leaves); a HEAD request's body is left out. Every response's body follows its head
        at once, so the head is held for it (`hold_head`, from the connection: one write)."""
        request_id = (REQUEST_ID, record.request_id.encode())
        settle = self.ledger.settle

        async def framed(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                timing = (SERVER_TIMING, record.server_timing().encode())
                headers = [*message.get("headers", []), request_id, timing]
                if record.ticket is not None:
                    headers += record.ticket.headers
                message["headers"] = headers
                if hold_head is not None:
                    hold_head()
            elif message["type"] == "http.response.body":
                if record.first_byte_ms is None:
                    record.first_byte_ms = record.elapsed_ms()
                if not message.get("more_body", False):
                    settle(record)
                    record.is_finished = True
                if is_head:
                    message = {**message, "body": b""}
            await send(message)

        return framed
