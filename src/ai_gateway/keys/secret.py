"""Virtual key secrets: generated once, stored only as a SHA-256 digest and a display prefix."""

import hashlib
import secrets

SECRET_PREFIX = "sk-gw-"  # noqa: S105 - the public marker of a key, not a secret
SECRET_BYTES = 32
DISPLAY_LENGTH = 12


def new_secret() -> str:
    """A fresh key: `sk-gw-` and 32 random bytes, URL-safe base64 (43 characters)."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def digest(secret: str) -> bytes:
    """The stored form of a key (also of a static key): its SHA-256 digest."""
    return hashlib.sha256(secret.encode()).digest()


def display_prefix(secret: str) -> str:
    """What listings show of a key: its first characters, enough to tell keys apart."""
    return secret[:DISPLAY_LENGTH]
