"""GatewayError and its subclasses: every failure the gateway reports, in the OpenAI error shape."""

from collections.abc import Mapping
from typing import Any, ClassVar


class GatewayError(Exception):
    """A failure with an HTTP status and an OpenAI-style error envelope."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or type(self).code
        self.status_code = status or type(self).status
        self.headers: dict[str, str] = dict(headers or {})
        self.attempts: int | None = None  # upstream attempts made, set by the router

    def envelope(self) -> dict[str, Any]:
        """The body OpenAI clients expect: `{"error": {message, type, param, code}}`."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    """The caller's request is wrong (400, or the status an upstream gave: 404, 409, 413, 422)."""

    status = 400
    error_type = "invalid_request_error"


class RequestTooLarge(InvalidRequest):
    """The request body is over MAX_REQUEST_BYTES."""

    status = 413
    code = "request_too_large"


class AuthenticationFailed(GatewayError):
    """Missing, malformed, unknown, disabled or expired key; always with the Bearer challenge."""

    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"www-authenticate": "Bearer"})


class NotFound(InvalidRequest):
    """No such route."""

    status = 404
    code = "not_found"


class MethodNotAllowed(InvalidRequest):
    """The route exists but not for this method."""

    status = 405
    code = "method_not_allowed"


class ModelNotFound(InvalidRequest):
    """No provider serves the requested model."""

    status = 404
    code = "model_not_found"


class RateLimited(GatewayError):
    """A rate limit was hit; `headers` carries the retry hints."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ProviderError(GatewayError):
    """The upstream failed: 5xx, unreachable, timed out, malformed, or it rejected our key."""

    status = 502
    error_type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(ProviderError):
    """The upstream gave no answer in time: a transport timeout, an HTTP 408, or a deployment's
    own limit."""

    code = "upstream_timeout"


class DeadlineExceeded(UpstreamTimeout):
    """The request's deadline ran out during an attempt: the route's time, not the
    deployment's fault."""


class UpstreamAuthError(ProviderError):
    """The upstream refused the gateway's own credentials (401, 402, 403): not the caller's
    fault, and another deployment may accept its own key."""

    code = "upstream_auth_error"


class UpstreamResponseTooLarge(ProviderError):
    """The upstream's reply, or one event of its stream, is over the gateway's size limit."""

    code = "upstream_response_too_large"


class UpstreamRedirected(ProviderError):
    """The upstream answered with a redirect (3xx), which the gateway never follows: it would
    send the prompt and the key to another host."""


class ParameterRejected(InvalidRequest):
    """The deployment's policy refuses a parameter the caller sent (400)."""

    code = "unsupported_parameter"


class ProviderNotConfigured(GatewayError):
    """The provider has no credentials in this deployment."""

    status = 503
    error_type = "upstream_error"
    code = "provider_not_configured"


class ServiceUnavailable(GatewayError):
    """The gateway itself cannot serve right now (shutting down)."""

    status = 503
    error_type = "api_error"
    code = "service_unavailable"


class InternalError(GatewayError):
    """An unexpected failure; the message never echoes the request."""

    status = 500
    error_type = "api_error"
    code = "internal_error"


class ConfigurationError(GatewayError):
    """The settings or the config file cannot start a gateway; the message says what to change.
    Raised at start-up only, never rendered as a response."""

    code = "configuration_error"


class Conflict(InvalidRequest):
    """The change clashes with what is stored: a duplicate name, a team that still has keys."""

    status = 409
    code = "conflict"
