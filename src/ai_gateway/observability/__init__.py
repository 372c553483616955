"""Observability: what the gateway reports about its requests besides its log lines."""
