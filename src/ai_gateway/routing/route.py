"""Route and Deployment: where a model name can be served, and the policy for trying."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from ai_gateway.config.file import RoutingConfig, TimeoutsConfig
from ai_gateway.providers.protocol import ChatProvider

NO_TIMEOUTS = TimeoutsConfig()
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """One attempt's limits, in seconds; None is no limit beyond the transport's own."""

    connect_s: float | None = None
    first_byte_s: float | None = None
    total_s: float | None = None

    @classmethod
    def merged(cls, own: TimeoutsConfig, default: TimeoutsConfig = NO_TIMEOUTS) -> "Timeouts":
        """A deployment's limits, each one falling back to the routing default."""
        return cls(
            connect_s=own.connect_s or default.connect_s,
            first_byte_s=own.first_byte_s or default.first_byte_s,
            total_s=own.total_s or default.total_s,
        )


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream model behind a route, with its own limits and parameter overrides."""

    provider: ChatProvider
    model: str
    timeouts: Timeouts = Timeouts()
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    weight: float = 1.0
    key: str = field(init=False)
    """`provider/model`: the deployment's name in logs, breakers and the health endpoint."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.provider.name}/{self.model}")


@dataclass(frozen=True, slots=True)
class Policy:
    """How hard a route tries: retries, deadline, backoff, Retry-After cap, hedging.

    `Policy()` itself is one attempt per deployment; the gateway's policies come from the config
    file's `routing` section (whose defaults retry twice) through `from_config`.
    """

    retries: int = 0
    deadline_s: float = 60.0
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 4.0
    retry_after_max_s: float = 30.0
    hedge_after_s: float | None = None
    fallback_on_context_length: bool = False
    weighted: bool = False

    @classmethod
    def from_config(
        cls, routing: RoutingConfig, *, request_timeout_s: float, **overrides: Any
    ) -> "Policy":
        """The routing defaults, with an alias's own settings on top. Without a `deadline_s`
        in the file, the whole request (retries, backoff, fallbacks) gets REQUEST_TIMEOUT_S."""
        values: dict[str, Any] = {
            "retries": routing.retries,
            "deadline_s": routing.deadline_s or request_timeout_s,
            "backoff_initial_s": routing.backoff.initial_ms / 1000,
            "backoff_max_s": routing.backoff.max_ms / 1000,
            "retry_after_max_s": routing.retry_after_max_s,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Route:
    """A model name (an alias, or `provider/model`) and the deployments that serve it."""

    name: str
    deployments: tuple[Deployment, ...]
    policy: Policy = Policy()


@dataclass(frozen=True, slots=True)
class Served(Generic[T]):
    """What answered, and how many attempts it took."""

    value: T
    deployment: Deployment
    attempts: int
