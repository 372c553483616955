"""Routing: aliases, retries, fallbacks, breakers, hedging."""
