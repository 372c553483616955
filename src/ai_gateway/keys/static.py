"""KeyStore: the gateway keys callers may present, kept as hashes and compared in constant time."""

import hmac
from collections.abc import Iterable

from pydantic import SecretStr

from ai_gateway.keys.secret import digest


class KeyStore:
    """An in-memory set of key hashes; `verify` never short-circuits on a match."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(digest(key) for key in keys if key)

    @classmethod
    def from_secrets(cls, keys: Iterable[SecretStr]) -> "KeyStore":
        """Build from settings' secret values."""
        return cls(key.get_secret_value() for key in keys)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"KeyStore({len(self)} keys)"

    def verify(self, key: str) -> bool:
        """Whether the key is one of ours, in time independent of which one matched."""
        candidate = digest(key)
        matched = False
        for stored in self._digests:
            matched |= hmac.compare_digest(candidate, stored)
        return matched
