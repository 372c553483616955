"""The one error renderer: every failure, whatever raised it, leaves as the OpenAI envelope."""

import orjson
import structlog
from starlette.responses import Response

from ai_gateway.api.record import RequestRecord
from ai_gateway.errors import GatewayError, InternalError, ProviderError

log = structlog.get_logger(__name__)


def error_response(error: GatewayError, record: RequestRecord) -> Response:
    """The JSON envelope with the error's status and headers; the failure is noted on the
    request's record (and an upstream failure logged as `upstream_failure`)."""
    record.error_code = error.code
    if isinstance(error, ProviderError):
        log.warning(
            "upstream_failure", code=error.code, status=error.status_code, message=error.message
        )
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
