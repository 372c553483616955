"""The routing table: the config file's aliases resolved against the registry into Routes, the
Router built from them, and the table as `ai-gateway check-config` prints it."""

from types import MappingProxyType

from ai_gateway.config import constants
from ai_gateway.config.file import AliasConfig, DeploymentConfig, GatewayConfig
from ai_gateway.errors import ConfigurationError, GatewayError
from ai_gateway.providers.protocol import ChatProvider
from ai_gateway.providers.registry import Registry, param_policy
from ai_gateway.providers.unconfigured import UnconfiguredProvider
from ai_gateway.routing.breaker import BreakerBoard
from ai_gateway.routing.route import Deployment, Policy, Route, Timeouts
from ai_gateway.routing.router import Router


def provider_of(registry: Registry, where: str, model: str) -> tuple[ChatProvider, str]:
    """The provider and upstream model id of a deployment's `provider/model`."""
    try:
        return registry.resolve(model)
    except GatewayError as exc:
        raise ConfigurationError(
            f"{where}: {exc.message} A vendor is on once its key is set; a new one is "
            "declared under 'providers'."
        ) from None


def check_timeouts(where: str, timeouts: Timeouts, request_timeout_s: float) -> None:
    """Limits the transport's own timeout would always cut first are a mistake in the file."""
    for label, value in (
        ("connect_s", timeouts.connect_s),
        ("first_byte_s", timeouts.first_byte_s),
    ):
        if value is not None and value > request_timeout_s:
            raise ConfigurationError(
                f"{where}.timeouts.{label}: {value:g} s is more than REQUEST_TIMEOUT_S "
                f"({request_timeout_s:g} s), which bounds every upstream call first; "
                "lower it or raise REQUEST_TIMEOUT_S"
            )


def check_overrides(where: str, config: GatewayConfig, deployment: DeploymentConfig) -> None:
    """A deployment cannot set a parameter its provider's policy removes or refuses."""
    provider_name, _, model = deployment.model.partition("/")
    own = config.providers.get(provider_name)
    if own is None or not deployment.params:
        return
    actions = param_policy(provider_name, own).actions(model)
    for name in deployment.params:
        if actions.get(name, "pass") != "pass":
            raise ConfigurationError(
                f"{where}.params.{name}: providers.{provider_name} would {actions[name]} it; "
                "a deployment's own parameters must be ones its provider passes"
            )


def alias_route(
    name: str,
    alias: AliasConfig,
    config: GatewayConfig,
    registry: Registry,
    request_timeout_s: float,
) -> Route:
    """One alias as a Route: its deployments in order, each with its own limits and params."""
    deployments = []
    for index, own in enumerate(alias.deployments):
        where = f"aliases.{name}.deployments[{index}]"
        provider, model = provider_of(registry, where, own.model)
        check_overrides(where, config, own)
        timeouts = Timeouts.merged(own.timeouts, config.routing.timeouts)
        check_timeouts(where, timeouts, request_timeout_s)
        if timeouts.connect_s is not None:
            provider = provider.with_connect_timeout(timeouts.connect_s)
        deployments.append(
            Deployment(
                provider,
                model,
                timeouts=timeouts,
                params=MappingProxyType(dict(own.params)),
                weight=own.weight or 1.0,
            )
        )
    policy = Policy.from_config(
        config.routing,
        request_timeout_s=request_timeout_s,
        retries=alias.retries,
        deadline_s=alias.deadline_s,
        hedge_after_s=alias.hedge_after_ms / 1000 if alias.hedge_after_ms else None,
        fallback_on_context_length=alias.fallback_on_context_length,
        weighted=alias.strategy == "weighted",
    )
    return Route(name, tuple(deployments), policy)


def build_router(
    config: GatewayConfig,
    registry: Registry,
    *,
    request_timeout_s: float = constants.DEFAULT_REQUEST_TIMEOUT_S,
) -> Router:
    """The Router for this config; every alias is checked against the registry."""
    defaults = Timeouts.merged(config.routing.timeouts)
    check_timeouts("routing", defaults, request_timeout_s)
    aliases = {
        name: alias_route(name, alias, config, registry, request_timeout_s)
        for name, alias in config.aliases.items()
    }
    pinned = tuple(d.key for route in aliases.values() for d in route.deployments)
    return Router(
        registry,
        aliases=aliases,
        policy=Policy.from_config(config.routing, request_timeout_s=request_timeout_s),
        timeouts=defaults,
        breakers=BreakerBoard(config.routing.breaker, pinned=pinned),
        transport_s=request_timeout_s,
    )


def describe_timeouts(timeouts: Timeouts) -> str:
    """`connect 2s, first byte 5s` for the limits that are set."""
    parts = [
        f"{label} {value:g}s"
        for label, value in (
            ("connect", timeouts.connect_s),
            ("first byte", timeouts.first_byte_s),
            ("total", timeouts.total_s),
        )
        if value is not None
    ]
    return ", ".join(parts)


def describe_policy(policy: Policy) -> str:
    """One line of a route's policy."""
    parts = [
        "weighted" if policy.weighted else "ordered",
        f"retries {policy.retries}",
        f"deadline {policy.deadline_s:g}s",
    ]
    if policy.hedge_after_s is not None:
        parts.append(f"hedge after {policy.hedge_after_s * 1000:g}ms")
    if policy.fallback_on_context_length:
        parts.append("falls back on context length")
    return ", ".join(parts)


def describe_deployment(position: int, deployment: Deployment, weighted: bool) -> str:
    """One deployment line."""
    line = f"    {position}. {deployment.key}"
    if isinstance(deployment.provider, UnconfiguredProvider):
        line += "  [provider not configured: answers 503]"
    extras = [describe_timeouts(deployment.timeouts)]
    if weighted:
        extras.append(f"weight {deployment.weight:g}")
    if deployment.params:
        extras.append("params " + ", ".join(f"{k}={v!r}" for k, v in deployment.params.items()))
    return line + "".join(f"; {extra}" for extra in extras if extra)


def provider_state(provider: ChatProvider) -> str:
    """How a provider is served."""
    if isinstance(provider, UnconfiguredProvider):
        return f"not configured: set {provider.key_variable} (answers 503 until then)"
    return "mock" if provider.is_mock else "ready"


def render_table(router: Router) -> str:
    """The resolved routing table: providers, defaults, aliases and their deployments."""
    lines = ["providers:"]
    lines += [f"  {p.name:<12} {provider_state(p)}" for p in router.registry]
    lines.append(f"defaults (provider/model routes): {describe_policy(router.policy)}")
    if timeouts := describe_timeouts(router.timeouts):
        lines.append(f"  timeouts: {timeouts}")
    lines.append("aliases:" if router.aliases else "aliases: none")
    for name, route in router.aliases.items():
        lines.append(f"  {name}: {describe_policy(route.policy)}")
        lines += [
            describe_deployment(i, d, route.policy.weighted)
            for i, d in enumerate(route.deployments, start=1)
        ]
    return "\n".join(lines)
