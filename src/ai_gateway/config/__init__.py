"""Settings and constants."""
