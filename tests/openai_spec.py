"""Validate gateway output against the vendored OpenAI OpenAPI schemas (tests/data/openai-spec)."""

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parent / "data" / "openai-spec" / "openai-chat-subset.json"


def fix_nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` -> JSON Schema's `anyOf [node, null]`."""
    if isinstance(node, dict):
        fixed = {key: fix_nullable(value) for key, value in node.items()}
        if fixed.pop("nullable", False) is True:
            return {"anyOf": [fixed, {"type": "null"}]}
        return fixed
    if isinstance(node, list):
        return [fix_nullable(item) for item in node]
    return node


@cache
def validator(schema: str) -> Draft202012Validator:
    """A validator for one schema of `components.schemas`."""
    spec = fix_nullable(json.loads(SPEC_PATH.read_text()))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:openai", resource)
    ref = {"$ref": f"urn:openai#/components/schemas/{schema}"}
    return Draft202012Validator(ref, registry=registry)


def assert_valid(schema: str, instance: object) -> None:
    """Fail with every schema violation listed."""
    errors = sorted(validator(schema).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def assert_completion(body: object) -> None:
    """A valid non-streaming chat completion."""
    assert_valid("CreateChatCompletionResponse", body)


def assert_chunk(body: object) -> None:
    """A valid stream chunk."""
    assert_valid("CreateChatCompletionStreamResponse", body)


def assert_error(body: object) -> None:
    """A valid OpenAI error body."""
    assert_valid("ErrorResponse", body)


def assert_model_list(body: object) -> None:
    """A valid model list."""
    assert_valid("ListModelsResponse", body)
