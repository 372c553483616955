"""Prices: USD per token for each provider's models (filled in with the price table)."""

from ai_gateway.config.file import GatewayConfig
from ai_gateway.routing.route import Route
from ai_gateway.schemas import Usage


class PriceTable:
    """Knows no price yet: every cost is unknown."""

    def cost(self, provider: str, model: str, usage: Usage) -> float | None:
        """USD for a completion's usage; None when the model's price is unknown."""
        return None

    def max_cost(self, route: Route, prompt_tokens: int, completion_tokens: int) -> float | None:
        """The most USD a request may cost over the route; None when a price is unknown."""
        return None


def price_table(config: GatewayConfig) -> PriceTable:
    """The shipped prices with the config file's overrides."""
    return PriceTable()
