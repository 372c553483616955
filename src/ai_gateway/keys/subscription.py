"""subscribe(): the key and team changes other replicas announce on Redis, as they arrive.

Pub/sub delivers at most once: a message sent while this replica was disconnected is lost. So
after every reconnection the whole key cache is reloaded (`on_reconnect`), and the periodic
refresh remains the bound when Redis is down.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio
import structlog

from ai_gateway.keys.invalidation import channel, parse
from ai_gateway.keys.records import Change

log = structlog.get_logger(__name__)

RECONNECT_DELAY_S = 1.0
POLL_S = 1.0


async def reload_quietly(reload: Callable[[], Awaitable[None]]) -> None:
    """A reload after reconnecting; one that fails (the database is down too) is logged and
    left to the periodic refresh, never the end of the subscription."""
    try:
        await reload()
    except Exception:
        log.warning("key_reload_failed", exc_info=True)


async def subscribe(
    client: "redis.asyncio.Redis",
    prefix: str,
    *,
    on_reconnect: Callable[[], Awaitable[None]],
) -> AsyncIterator[Change]:
    """Every announced change, across reconnections, until cancelled; an outage is logged
    once when it starts and once when it ends."""
    has_subscribed = is_down = False
    while True:
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(channel(prefix))
                if has_subscribed:
                    log.info("key_changes_resubscribed")
                    await reload_quietly(on_reconnect)
                has_subscribed, is_down = True, False
                while True:
                    message = await pubsub.get_message(timeout=POLL_S)
                    change = None if message is None else parse(message["data"])
                    if change is not None:
                        yield change
        except (redis.RedisError, OSError):
            if not is_down:
                log.warning("key_changes_unsubscribed")
            is_down = True
            await asyncio.sleep(RECONNECT_DELAY_S)
