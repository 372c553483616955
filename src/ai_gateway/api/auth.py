"""The bearer token of `Authorization: Bearer <key>`, and the check of an admin key against
its KeyStore (callers' keys resolve through the KeyDirectory)."""

from ai_gateway.errors import AuthenticationFailed
from ai_gateway.keys.static import KeyStore


def bearer_token(authorization: str | None) -> str:
    """The token of a `Bearer` Authorization header; anything else is a 401."""
    if not authorization:
        raise AuthenticationFailed(
            "Missing API key. Send your gateway key as 'Authorization: Bearer <key>'.",
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthenticationFailed(
            "Malformed Authorization header. Use 'Authorization: Bearer <key>'.",
        )
    return token


def authenticate(keys: KeyStore, authorization: str | None) -> None:
    """Reject the request unless it carries one of `keys` (compared in constant time)."""
    if not keys.verify(bearer_token(authorization)):
        raise AuthenticationFailed("Incorrect API key provided.")
