"""RedisLimiter beyond the contract: its keys and their expiry, and what it does while Redis
cannot be reached (refused connections, a silent server, an outage that ends)."""

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from ai_gateway.errors import ServiceUnavailable
from ai_gateway.keys.caller import Limits, Scope, Subject
from ai_gateway.limits import redis_store
from ai_gateway.limits.limiter import Denial, Grant
from ai_gateway.limits.redis_store import RedisLimiter, redis_client
from tests.limits.conftest import Logs
from tests.services import REDIS_URL

pytestmark = pytest.mark.anyio

KEY = Subject(Scope.KEY, "k1", Limits(rpm=10, tpm=1_000, parallel=1))
TEAM = Subject(Scope.TEAM, "t1", Limits(rpm=100))
BACKOFF_S = 0.2
TIMEOUT_S = 0.2


def free_port() -> int:
    """A port nothing listens on (just released by the OS)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Proxy:
    """A TCP relay to the test Redis on a port of its own that can be stopped and restarted,
    cutting every open connection: Redis going away and coming back."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        self._writers |= {writer, upstream_writer}
        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            self._writers -= {writer, upstream_writer}
            writer.close()
            upstream_writer.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A port that accepts connections and never answers; its number."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@contextlib.asynccontextmanager
async def limiter_at(
    url: str, *, prefix: str = "unused", fail_open: bool, **options: int
) -> AsyncIterator[RedisLimiter]:
    """A limiter on `url` with a short timeout and backoff; closed, with its client, after."""
    client = redis_client(url, timeout_s=TIMEOUT_S)
    limiter = RedisLimiter(
        client, prefix=prefix, fail_open=fail_open, outage_backoff_s=BACKOFF_S, **options
    )
    try:
        yield limiter
    finally:
        await limiter.aclose()
        await client.aclose()


def events(logs: Logs) -> list[tuple[str, str]]:
    return [(entry["log_level"], entry["event"]) for entry in logs]


async def test_each_subject_has_its_keys_under_the_prefix_and_they_expire(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        async with limiter_at(
            REDIS_URL, prefix=prefix, fail_open=False, window_ms=300, lease_ttl_ms=5_000
        ) as limiter:
            assert isinstance(await limiter.admit((KEY, TEAM), tokens=10), Grant)
            names = sorted(name.decode() for name in await client.keys(f"{prefix}:*"))
            ttls = {name: await client.pttl(name) for name in names}
            await asyncio.sleep(0.35)
            left = sorted(name.decode() for name in await client.keys(f"{prefix}:*"))
    finally:
        await client.aclose()

    assert names == [
        f"{prefix}:key:k1:par",
        f"{prefix}:key:k1:req",
        f"{prefix}:key:k1:tok",
        f"{prefix}:key:k1:wts",
        f"{prefix}:team:t1:req",
    ]
    assert all(0 < ttl <= 300 for name, ttl in ttls.items() if not name.endswith(":par"))
    assert 4_000 < ttls[f"{prefix}:key:k1:par"] <= 5_000
    assert left == [f"{prefix}:key:k1:par"]


async def test_unreachable_and_fail_open_lets_requests_pass_uncounted(logs: Logs) -> None:
    async with limiter_at(f"redis://:secret@127.0.0.1:{free_port()}/0", fail_open=True) as limiter:
        grants = [await limiter.admit((KEY,), tokens=10) for _ in range(5)]
        for grant in grants:
            assert isinstance(grant, Grant)
            limiter.settle((KEY,), grant, tokens=10)
        await asyncio.wait_for(limiter.flush(), 0.1)

    for grant in grants:
        assert isinstance(grant, Grant)
        assert (grant.requests, grant.tokens, grant.reserved_tokens) == (None, None, 0)
        assert not grant.is_counted
    assert events(logs) == [("warning", "limits_store_unreachable")]
    assert "secret" not in repr(logs)


async def test_unreachable_and_fail_closed_refuses_with_a_503(logs: Logs) -> None:
    errors = []
    async with limiter_at(f"redis://127.0.0.1:{free_port()}/0", fail_open=False) as limiter:
        for _ in range(3):
            with pytest.raises(ServiceUnavailable) as caught:
                await limiter.admit((KEY,), tokens=10)
            errors.append(caught.value)

    assert {(error.status_code, error.code) for error in errors} == {(503, "limits_unavailable")}
    assert errors[0].message.startswith("Rate limits cannot be checked right now")
    assert errors[-1].headers["retry-after"] == "1"
    assert events(logs) == [("warning", "limits_store_unreachable")]


async def test_a_limiter_whose_connections_are_all_busy_refuses_without_an_outage(
    logs: Logs, prefix: str
) -> None:
    """No connection free within the timeout (this process overloaded, Redis well): that
    request is refused (fail closed), nothing is logged as an outage, and the next request
    goes to Redis at once rather than being skipped for the backoff."""
    async with limiter_at(REDIS_URL, prefix=prefix, fail_open=False) as limiter:
        runner = limiter._scripts
        held = [await runner._checkout() for _ in range(runner._size)]
        with pytest.raises(ServiceUnavailable) as caught:
            await limiter.admit((KEY,), tokens=10)
        for connection in held:
            runner._checkin(connection)
        after = await limiter.admit((KEY,), tokens=10)

    assert caught.value.code == "limits_unavailable"
    assert isinstance(after, Grant)
    assert after.is_counted
    assert events(logs) == []


async def test_a_silent_store_costs_one_timeout_then_is_skipped(logs: Logs) -> None:
    async with (
        silent_server() as port,
        limiter_at(f"redis://127.0.0.1:{port}/0", fail_open=True) as limiter,
    ):
        started = time.monotonic()
        first = await limiter.admit((KEY,), tokens=10)
        first_s = time.monotonic() - started
        started = time.monotonic()
        second = await limiter.admit((KEY,), tokens=10)
        second_s = time.monotonic() - started

    assert isinstance(first, Grant)
    assert isinstance(second, Grant)
    assert (first.is_counted, second.is_counted) == (False, False)
    assert TIMEOUT_S * 0.9 < first_s < TIMEOUT_S + 0.3
    assert second_s < 0.01
    assert events(logs) == [("warning", "limits_store_unreachable")]


async def test_an_outage_that_ends_is_logged_once_each_way(logs: Logs, prefix: str) -> None:
    proxy = Proxy()
    async with limiter_at(proxy.url, prefix=prefix, fail_open=True) as limiter:
        down = [await limiter.admit((KEY,), tokens=10) for _ in range(3)]
        await proxy.start()
        await asyncio.sleep(BACKOFF_S + 0.05)
        up = await limiter.admit((KEY,), tokens=10)
        again = await limiter.admit((KEY,), tokens=10)
    await proxy.stop()

    assert all(isinstance(grant, Grant) and not grant.is_counted for grant in down)
    assert isinstance(up, Grant)
    assert up.is_counted
    assert isinstance(again, Denial)  # one parallel request: the first counted one holds it
    assert events(logs) == [
        ("warning", "limits_store_unreachable"),
        ("info", "limits_store_recovered"),
    ]


async def test_a_settle_queued_during_an_outage_is_sent_when_it_ends(
    logs: Logs, prefix: str
) -> None:
    proxy = Proxy()
    await proxy.start()
    many = Subject(Scope.KEY, "k2", Limits(parallel=3))
    async with limiter_at(proxy.url, prefix=prefix, fail_open=True) as limiter:
        grants = [await limiter.admit((many,), tokens=10) for _ in range(3)]
        await proxy.stop()
        for grant in grants:
            assert isinstance(grant, Grant)
            limiter.settle((many,), grant, tokens=10)
        await asyncio.sleep(0.05)
        await proxy.start()
        await asyncio.wait_for(limiter.flush(), BACKOFF_S + 1)
        after = [await limiter.admit((many,), tokens=10) for _ in range(4)]
    await proxy.stop()

    assert [isinstance(verdict, Grant) and verdict.is_counted for verdict in after] == [
        True,
        True,
        True,
        False,
    ]
    assert events(logs) == [
        ("warning", "limits_store_unreachable"),
        ("info", "limits_store_recovered"),
    ]


async def test_closing_sends_the_settles_still_queued(prefix: str) -> None:
    async with limiter_at(REDIS_URL, prefix=prefix, fail_open=False) as first:
        grant = await first.admit((KEY,), tokens=10)
        assert isinstance(grant, Grant)
        first.settle((KEY,), grant, tokens=10)
    first.settle((KEY,), grant, tokens=10)  # after closing: ignored

    async with limiter_at(REDIS_URL, prefix=prefix, fail_open=False) as second:
        assert isinstance(await second.admit((KEY,), tokens=10), Grant)


async def test_settles_past_the_queue_bound_are_dropped(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    monkeypatch.setattr(redis_store, "MAX_PENDING_SETTLES", 2)
    many = Subject(Scope.KEY, "k3", Limits(parallel=3))
    async with limiter_at(REDIS_URL, prefix=prefix, fail_open=False) as limiter:
        grants = [await limiter.admit((many,), tokens=10) for _ in range(3)]
        for grant in grants:
            assert isinstance(grant, Grant)
            limiter.settle((many,), grant, tokens=10)
        await limiter.flush()
        after = [await limiter.admit((many,), tokens=10) for _ in range(3)]

    assert [isinstance(verdict, Grant) for verdict in after] == [True, True, False]


async def test_scripts_flushed_from_redis_are_loaded_again(prefix: str) -> None:
    async with limiter_at(REDIS_URL, prefix=prefix, fail_open=False) as limiter:
        first = await limiter.admit((KEY,), tokens=10)
        assert isinstance(first, Grant)
        limiter.settle((KEY,), first, tokens=10)
        flusher = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            await flusher.script_flush()  # as after a Redis restart: no script is known
        finally:
            await flusher.aclose()
        second = await limiter.admit((KEY,), tokens=10)  # carries the settle: both reloaded

    assert isinstance(second, Grant)
    assert second.is_counted


async def test_a_huge_settle_is_clamped_and_a_refused_one_spoils_no_other(
    logs: Logs, prefix: str
) -> None:
    broken = Subject(Scope.KEY, "broken", Limits(tpm=1_000, parallel=1))
    healthy = Subject(Scope.KEY, "healthy", Limits(parallel=1))
    async with limiter_at(REDIS_URL, prefix=prefix, fail_open=False) as limiter:
        first = await limiter.admit((broken,), tokens=10)
        assert isinstance(first, Grant)
        limiter.settle((broken,), first, tokens=10**20)  # an upstream's absurd usage
        await limiter.flush()
        spoiler = redis.asyncio.Redis.from_url(REDIS_URL)
        try:  # a settle Redis refuses whatever happens (a key of the wrong type)
            await spoiler.set(f"{prefix}:key:broken:wts", "not a hash")
        finally:
            await spoiler.aclose()
        second = await limiter.admit((healthy,), tokens=10)
        assert isinstance(second, Grant)
        limiter.settle((broken,), first, tokens=10)
        limiter.settle((healthy,), second, tokens=10)
        await limiter.flush()
        third = await limiter.admit((healthy,), tokens=10)

    assert isinstance(third, Grant)  # the settle beside the refused one was applied
    assert events(logs) == []  # Redis answered every call: no outage
