"""Key and team changes announced on Redis pub/sub, so every replica reloads what changed."""

from typing import TYPE_CHECKING, Final

import orjson

from ai_gateway.keys.caller import Scope
from ai_gateway.keys.records import Change
from ai_gateway.keys.tables import ID_LENGTH

if TYPE_CHECKING:
    import redis.asyncio

CHANNEL_SUFFIX: Final = "keys:changes"
"""The channel is `<REDIS_PREFIX>:keys:changes`."""


def channel(prefix: str) -> str:
    """The channel changes are announced on."""
    return f"{prefix}:{CHANNEL_SUFFIX}"


def encode(change: Change) -> bytes:
    """A change as a message: `{"scope": "key", "id": "key_..."}`."""
    return orjson.dumps({"scope": change.scope.value, "id": change.id})


async def publish(client: "redis.asyncio.Redis", prefix: str, change: Change) -> None:
    """Announce a committed change to every subscribed replica."""
    await client.publish(channel(prefix), encode(change))


def parse(message: bytes | str) -> Change | None:
    """The change a message announces; None for anything malformed (ignored, not fatal)."""
    try:
        fields = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(fields, dict):
        return None
    scope, change_id = fields.get("scope"), fields.get("id")
    if scope not in {s.value for s in Scope} or not isinstance(change_id, str):
        return None
    if not 0 < len(change_id) <= ID_LENGTH:
        return None
    return Change(Scope(scope), change_id)
