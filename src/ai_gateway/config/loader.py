"""Reading the config file: YAML in, a validated GatewayConfig out, or one clear message."""

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ai_gateway.config.file import GatewayConfig
from ai_gateway.errors import ConfigurationError


def location(parts: tuple[int | str, ...]) -> str:
    """`aliases.fast.deployments[0].model` from pydantic's error location."""
    text = ""
    for part in parts:
        if part == "[key]":  # pydantic's step for a mapping key that failed validation
            text += " (the name)"
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def describe(error: ValidationError, path: str) -> str:
    """Every problem of the file, one per line, each with where it is."""
    lines = [f"{path}: {error.error_count()} problem(s):"]
    for item in error.errors():
        lines.append(f"  {location(item['loc'])}: {item['msg']}")
    return "\n".join(lines)


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"'{key}' appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str, path: str) -> Any:
    """The YAML document in `text`; its error messages name `path`, not `<unicode string>`."""
    loader = UniqueKeyLoader(text)
    loader.name = path  # the name yaml puts in every error's position ("in <name>, line 3")
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_config(text: str, path: str = "<config>") -> GatewayConfig:
    """The config from YAML text."""
    try:
        data = read_yaml(text, path)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return GatewayConfig()
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: the top level must be a mapping")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(describe(exc, path)) from None


def load_config(path: str | None) -> GatewayConfig:
    """The config file at `path`, or the defaults when no file is set."""
    if not path:
        return GatewayConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path}: the config file is not UTF-8 text") from None
    return parse_config(text, path)
