"""ParamPolicy: what a provider does with each request parameter, per model: pass, drop, reject.

The default is pass: a parameter the gateway knows nothing about still reaches the upstream.
A vendor spec's `unsupported_params` are drops for every model; the config file adds per-provider
and per-model entries, the most specific one winning.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ai_gateway.errors import ParameterRejected

Action = Literal["pass", "drop", "reject"]
NO_ACTIONS: Mapping[str, Action] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ParamPolicy:
    """Per-provider actions, overridden per model."""

    provider: str
    default: Mapping[str, Action] = field(default_factory=lambda: NO_ACTIONS)
    per_model: Mapping[str, Mapping[str, Action]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @property
    def is_pass_all(self) -> bool:
        """Whether every parameter of every model passes unchanged."""
        return not self.default and not self.per_model

    def actions(self, model: str) -> Mapping[str, Action]:
        """The actions for one model: the provider's, then the model's own on top."""
        own = self.per_model.get(model)
        return {**self.default, **own} if own else self.default

    def apply(self, model: str, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters to send: dropped ones removed; a rejected one raises a 400."""
        if self.is_pass_all:
            return params
        actions = self.actions(model)
        kept: dict[str, Any] = {}
        for name, value in params.items():
            action = actions.get(name, "pass")
            if action == "reject":
                raise ParameterRejected(
                    f"Parameter '{name}' is not supported by '{self.provider}/{model}'.",
                    param=name,
                )
            if action == "pass":
                kept[name] = value
        return kept
