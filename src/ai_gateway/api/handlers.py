"""Exception handlers: every error, ours or the framework's, leaves in the one OpenAI envelope."""

import orjson
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from ai_gateway.api.body import invalid_request
from ai_gateway.api.record import record_of_request
from ai_gateway.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ProviderError,
)

log = structlog.get_logger(__name__)


def error_response(error: GatewayError) -> Response:
    """The JSON envelope with the error's status and headers."""
    record_of_request().error_code = error.code
    return Response(
        content=orjson.dumps(error.envelope()),
        status_code=error.status_code,
        headers=error.headers,
        media_type="application/json",
    )


def internal_error(request_id: str) -> GatewayError:
    """The 500 for an unexpected failure: generic, with the request id, echoing nothing."""
    return InternalError(
        f"The gateway hit an unexpected error. Quote request id {request_id} when reporting it."
    )


def from_http_exception(exc: HTTPException) -> GatewayError:
    """Starlette's own errors (unknown route, wrong method, ...) as gateway errors."""
    if exc.status_code == 404:
        return NotFound("Unknown route. See /v1/chat/completions and /v1/models.")
    if exc.status_code == 405:
        return MethodNotAllowed("Method not allowed on this route.", headers=exc.headers)
    return InvalidRequest(str(exc.detail), status=exc.status_code, headers=exc.headers)


async def handle_gateway_error(_: Request, exc: Exception) -> Response:
    """Our own errors render themselves."""
    assert isinstance(exc, GatewayError)  # noqa: S101  # registered for GatewayError only
    if isinstance(exc, ProviderError):
        log.warning("upstream_failure", code=exc.code, status=exc.status_code, message=exc.message)
    return error_response(exc)


async def handle_validation_error(_: Request, exc: Exception) -> Response:
    """FastAPI's request validation (path, query, header parameters) -> 400."""
    assert isinstance(exc, RequestValidationError)  # noqa: S101  # registered for it only
    return error_response(invalid_request(exc.errors(), None))


async def handle_http_exception(_: Request, exc: Exception) -> Response:
    """404 and 405 in the same envelope."""
    assert isinstance(exc, HTTPException)  # noqa: S101  # registered for it only
    return error_response(from_http_exception(exc))


async def handle_unexpected(_: Request, exc: Exception) -> Response:
    """The 500 envelope; Starlette re-raises the exception, and RequestContext logs it once."""
    return error_response(internal_error(record_of_request().request_id))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers for every kind of exception a FastAPI route can raise."""
    app.add_exception_handler(Exception, handle_unexpected)
    app.add_exception_handler(GatewayError, handle_gateway_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(HTTPException, handle_http_exception)
