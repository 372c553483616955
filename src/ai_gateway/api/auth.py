"""The caller's gateway key: `Authorization: Bearer <key>`, checked against the KeyStore."""

from ai_gateway.errors import AuthenticationFailed
from ai_gateway.keys import KeyStore

CHALLENGE = {"www-authenticate": "Bearer"}


def bearer_token(authorization: str | None) -> str:
    """The token of a `Bearer` Authorization header; anything else is a 401."""
    if not authorization:
        raise AuthenticationFailed(
            "Missing API key. Send your gateway key as 'Authorization: Bearer <key>'.",
            headers=CHALLENGE,
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthenticationFailed(
            "Malformed Authorization header. Use 'Authorization: Bearer <key>'.",
            headers=CHALLENGE,
        )
    return token


def authenticate(keys: KeyStore, authorization: str | None) -> None:
    """Reject the request unless it carries a known gateway key (compared in constant time)."""
    if not keys.verify(bearer_token(authorization)):
        raise AuthenticationFailed("Incorrect API key provided.", headers=CHALLENGE)
