"""Upstream providers: the protocol, the registry and the adapters."""
