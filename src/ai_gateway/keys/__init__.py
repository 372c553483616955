"""Who calls: virtual keys and teams (stored), static keys (from the environment), and the
in-memory directory the hot path resolves a bearer token against."""
