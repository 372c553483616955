"""The gateway's OpenAPI document, built once at start-up and served as bytes.

The chat request's schema is the one the gateway validates against (request_schema.py); the
responses are described as far as clients rely on them: the completion or event stream, the
model list, and the one error envelope every failure uses.
"""

from typing import Any

import orjson

from ai_gateway import __version__
from ai_gateway.config.constants import (
    CHAT_COMPLETIONS_PATH,
    DEPLOYMENTS_HEALTH_PATH,
    HEALTH_PATH,
    METRICS_PATH,
    MODELS_PATH,
    READY_PATH,
)
from ai_gateway.request_schema import schema_components

REF = "#/components/schemas/{name}"
ERROR_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
PROVIDER_PARAMETER = {
    "name": "provider",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "A configured provider, e.g. cerebras",
}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    """An `application/json` content map."""
    return {"application/json": {"schema": schema}}


def errors() -> dict[str, Any]:
    """Every failure: the OpenAI error envelope."""
    return {"default": {"description": "Any error", "content": json_content(ERROR_ENVELOPE)}}


def operation(summary: str, ok: dict[str, Any], *, secured: bool = True) -> dict[str, Any]:
    """One operation with its 200 and the error envelope."""
    spec: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **errors()}}
    if not secured:
        spec["security"] = []
    return spec


def chat_operation(request: dict[str, Any]) -> dict[str, Any]:
    """POST chat completions."""
    ok = {
        "description": "A chat completion, or server-sent events when `stream` is true",
        "content": {
            **json_content({"type": "object"}),
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
    spec = operation("Create a chat completion", ok)
    spec["requestBody"] = {"required": True, "content": json_content(request)}
    return spec


def metrics_operation(*, secured: bool) -> dict[str, Any]:
    """GET /metrics: the Prometheus exposition (public unless METRICS_REQUIRE_ADMIN, then an
    admin key)."""
    exposition = {"schema": {"type": "string"}}
    ok = {
        "description": "Prometheus text format, or OpenMetrics when the scraper asks for it "
        "(an admin key is needed with METRICS_REQUIRE_ADMIN; a 404 with METRICS_ENABLED=false)",
        "content": {"text/plain": exposition, "application/openmetrics-text": exposition},
    }
    spec = operation("Prometheus metrics", ok, secured=False)
    if secured:
        spec["security"] = [{"adminKey": []}]
    return spec


def plain(summary: str, *, secured: bool = True) -> dict[str, Any]:
    """A GET answering one JSON object."""
    ok = {"description": "OK", "content": json_content({"type": "object"})}
    return {"get": operation(summary, ok, secured=secured)}


def build_document(*, metrics_secured: bool = False) -> bytes:
    """The OpenAPI 3.1 document, serialised (/metrics public, or behind the admin key's scheme
    when it needs one)."""
    request, components = schema_components(REF)
    chat = {"post": chat_operation(request)}
    models = plain("List models")
    paths = {
        CHAT_COMPLETIONS_PATH: chat,
        "/{provider}" + CHAT_COMPLETIONS_PATH: with_provider(chat),
        MODELS_PATH: models,
        "/{provider}" + MODELS_PATH: with_provider(models),
        DEPLOYMENTS_HEALTH_PATH: plain("Circuit breaker of every deployment"),
        HEALTH_PATH: plain("Liveness", secured=False),
        READY_PATH: plain("Readiness", secured=False),
        METRICS_PATH: {"get": metrics_operation(secured=metrics_secured)},
    }
    document = {
        "openapi": "3.1.0",
        "info": {"title": "ai_gateway", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "gatewayKey": {"type": "http", "scheme": "bearer"},
                "adminKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An entry of GATEWAY_ADMIN_KEYS",
                },
            },
        },
        "security": [{"gatewayKey": []}],
    }
    return orjson.dumps(document)


def with_provider(path_item: dict[str, Any]) -> dict[str, Any]:
    """The same operations under `/{provider}`."""
    return {"parameters": [PROVIDER_PARAMETER], **path_item}
