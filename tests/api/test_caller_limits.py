"""The HTTP contract of virtual keys' limits, through the whole app (started, its SQLite database
opened, keys issued through the admin API): the 429 of each limit, the `x-ratelimit-*` headers
on every chat response of a limited key and on no other, the settle of every way a response
ends, model access, the admin API's own key, refused keys, and what limits do while Redis
cannot be reached. Limit tests run on both limiters: in memory, and on the machine's Redis."""

import asyncio
import re
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog
from starlette.types import Message
from structlog.testing import capture_logs

from ai_gateway.api import dispatch
from ai_gateway.api.body import parse_chat_request
from ai_gateway.api.dispatch import Gateway
from ai_gateway.app import create_app
from ai_gateway.config.constants import DEFAULT_COMPLETION_TOKENS_ESTIMATE, DEFAULT_MAX_JSON_DEPTH
from ai_gateway.config.settings import Settings
from ai_gateway.errors import ProviderError
from ai_gateway.limits import outage
from ai_gateway.limits.estimate import estimate_prompt_tokens, estimate_tokens
from ai_gateway.providers.normalizer import ChunkNormalizer
from ai_gateway.providers.registry import Registry
from ai_gateway.schemas import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
)
from tests.conftest import ONE_ATTEMPT, app_client, lifespan, make_settings
from tests.fakes import GATEWAY_KEY, MODEL, FakeProvider, chat_body
from tests.services import REDIS_URL, redis_prefix

pytestmark = pytest.mark.anyio

ADMIN_KEY = "sk-admin-limits-test"
UNIFIED_MODEL = f"cerebras/{MODEL}"
OTHER_MODEL = "llama-other"
USED = 5
"""The FakeProvider's usage, answers and streams alike: 3 prompt + 2 completion tokens."""
RESET = re.compile(r"(1m0s|[1-5]?[0-9](\.[0-9]{1,3})?s|[0-9]{1,3}ms)")
"""A reset header within the minute, in OpenAI's duration format."""


@dataclass
class ScriptedProvider(FakeProvider):
    """A FakeProvider that can hold answers until `gate` opens, and streams that stop after
    `hang_after` chunks (`hanging` is set when the next chunk is awaited)."""

    gate: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hang_after: int | None = None
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    yielded: int = 0

    async def chat_completions(self, req: ChatCompletionRequest) -> ChatCompletionResponse:
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        return await super().chat_completions(req)

    async def stream_chat_completions(
        self, req: ChatCompletionRequest
    ) -> AsyncGenerator[list[ChatCompletionChunk], None]:
        if self.hang_after is None:
            async for arrived in super().stream_chat_completions(req):
                yield arrived
            return
        self.requests.append(req)
        normalizer = ChunkNormalizer(self.name)
        for data in self.chunks:
            for chunk in normalizer.feed(data):
                if self.yielded == self.hang_after:
                    self.hanging.set()
                    await asyncio.Event().wait()
                self.yielded += 1
                yield [chunk]


@dataclass
class Harness:
    """The started app, a client of it that sends no key by default, and its provider."""

    app: Gateway
    http: httpx.AsyncClient
    provider: ScriptedProvider

    async def issue(self, **fields: Any) -> Any:
        """A new virtual key through the admin API (its view, with the secret)."""
        response = await self.http.post(
            "/admin/v1/keys", json={"name": "limits", **fields}, headers=bearer(ADMIN_KEY)
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def chat(self, secret: str, **overrides: Any) -> httpx.Response:
        """A chat completion with the key (`chat_body` with the unified model id)."""
        return await self.http.post(
            "/v1/chat/completions",
            content=body_bytes(**overrides),
            headers={**bearer(secret), "content-type": "application/json"},
        )

    async def settled(self) -> None:
        """Every settle so far is counted (Redis settles are sent in the background)."""
        limiter: Any = self.app.routes.endpoints.admission.limiter
        await limiter.flush()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def body_bytes(**overrides: Any) -> bytes:
    """The bytes of a chat request, as sent (estimates are computed from these)."""
    return orjson.dumps(chat_body(**{"model": UNIFIED_MODEL, **overrides}))


def parsed(**overrides: Any) -> ChatCompletionRequest:
    return parse_chat_request(body_bytes(**overrides), max_depth=DEFAULT_MAX_JSON_DEPTH)


def estimate(**overrides: Any) -> int:
    """What the gateway reserves for the request `body_bytes(**overrides)`."""
    return estimate_tokens(
        parsed(**overrides), default_completion_tokens=DEFAULT_COMPLETION_TOKENS_ESTIMATE
    )


def limit_headers(response: httpx.Response) -> dict[str, str]:
    """The response's `x-ratelimit-*` headers."""
    return {k: v for k, v in response.headers.items() if k.startswith("x-ratelimit-")}


def rate_limit_error(message: str, code: str) -> Any:
    return {"error": {"message": message, "type": "rate_limit_error", "param": None, "code": code}}


def error(message: str, kind: str, code: str, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def retry_after_is_consistent(response: httpx.Response) -> bool:
    """Retry-After is retry-after-ms in whole seconds, rounded up (at least 1)."""
    ms = int(response.headers["retry-after-ms"])
    return 0 < ms <= 60_000 and int(response.headers["retry-after"]) == max(1, -(-ms // 1000))


def gateway_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """A gateway on a SQLite file of its own, the admin API on."""
    return make_settings(
        gateway_admin_keys=ADMIN_KEY,
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
        **overrides,
    )


@asynccontextmanager
async def started(settings: Settings, provider: ScriptedProvider) -> AsyncIterator[Harness]:
    """The app with its start-up and shutdown run around the block (as `started_app`), the
    app itself kept for raw ASGI calls and its limiter."""
    app = create_app(settings, registry=Registry({provider.name: provider}), config=ONE_ATTEMPT)
    async with lifespan(app), app_client(app, None) as http:
        yield Harness(app, http, provider)


@pytest.fixture
def scripted() -> ScriptedProvider:
    models = [ModelCard(id=MODEL, owned_by="cerebras"), ModelCard(id=OTHER_MODEL, owned_by="x")]
    return ScriptedProvider(models=models)


@pytest.fixture(params=["memory", "redis"])
async def counted(
    request: pytest.FixtureRequest, tmp_path: Path, scripted: ScriptedProvider
) -> AsyncIterator[Harness]:
    """The gateway counting limits in memory, or in Redis under a prefix of its own."""
    with redis_prefix() as prefix:
        shared = {"redis_url": REDIS_URL, "redis_prefix": prefix}
        settings = gateway_settings(tmp_path, **(shared if request.param == "redis" else {}))
        async with started(settings, scripted) as harness:
            yield harness


@pytest.fixture
async def gateway(tmp_path: Path, scripted: ScriptedProvider) -> AsyncIterator[Harness]:
    """The gateway counting limits in memory."""
    async with started(gateway_settings(tmp_path), scripted) as harness:
        yield harness


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """The log events of the request line and of the limits store's outages."""
    monkeypatch.setattr(dispatch, "log", structlog.get_logger())
    monkeypatch.setattr(outage, "log", structlog.get_logger())
    with capture_logs() as captured:
        yield captured


# --- the 429 of each limit ------------------------------------------------------------------


async def test_a_request_over_the_requests_per_minute_limit_gets_a_429_naming_the_limit(
    counted: Harness,
) -> None:
    key = await counted.issue(rpm_limit=1)

    first = await counted.chat(key["key"])
    refused = await counted.chat(key["key"])

    assert first.status_code == 200
    assert refused.status_code == 429
    assert refused.json() == rate_limit_error(
        f"Rate limit reached for key {key['id']}: 1 requests per minute. Retry later.",
        "rpm_limit_exceeded",
    )
    assert retry_after_is_consistent(refused)
    assert "x-should-retry" not in refused.headers
    headers = limit_headers(refused)
    assert RESET.fullmatch(headers.pop("x-ratelimit-reset-requests"))
    assert headers == {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0"}
    assert len(counted.provider.requests) == 1


async def test_a_request_over_the_tokens_per_minute_limit_gets_a_429_naming_the_limit(
    counted: Harness,
) -> None:
    limit = estimate() + USED - 1  # one request fits; after its settle, a second does not
    key = await counted.issue(tpm_limit=limit)

    first = await counted.chat(key["key"])
    await counted.settled()
    refused = await counted.chat(key["key"])

    assert first.status_code == 200
    assert refused.status_code == 429
    assert refused.json() == rate_limit_error(
        f"Rate limit reached for key {key['id']}: {limit} tokens per minute. Retry later.",
        "tpm_limit_exceeded",
    )
    assert retry_after_is_consistent(refused)
    headers = limit_headers(refused)
    assert RESET.fullmatch(headers.pop("x-ratelimit-reset-tokens"))
    assert headers == {
        "x-ratelimit-limit-tokens": str(limit),
        "x-ratelimit-remaining-tokens": str(limit - USED),
    }
    assert len(counted.provider.requests) == 1


async def test_a_request_over_the_parallel_limit_gets_a_429_until_the_one_in_flight_ends(
    counted: Harness,
) -> None:
    key = await counted.issue(max_parallel_requests=1)
    counted.provider.gate = gate = asyncio.Event()

    in_flight = asyncio.ensure_future(counted.chat(key["key"]))
    await counted.provider.arrived.wait()
    refused = await counted.chat(key["key"])
    gate.set()
    first = await in_flight
    await counted.settled()
    after = await counted.chat(key["key"])

    assert refused.status_code == 429
    assert refused.json() == rate_limit_error(
        f"Rate limit reached for key {key['id']}: 1 parallel requests. Retry later.",
        "parallel_limit_exceeded",
    )
    assert (refused.headers["retry-after"], refused.headers["retry-after-ms"]) == ("1", "1000")
    assert limit_headers(refused) == {}
    assert (first.status_code, after.status_code) == (200, 200)


async def test_a_request_too_large_for_the_tokens_limit_is_told_not_to_retry(
    counted: Harness,
) -> None:
    key = await counted.issue(tpm_limit=50)
    needed = estimate(max_tokens=100)

    refused = await counted.chat(key["key"], max_tokens=100)

    assert refused.status_code == 429
    assert refused.json() == rate_limit_error(
        f"Request too large for key {key['id']}: it may use about {needed} tokens, the limit "
        "is 50 tokens per minute. Send a shorter request or a lower max_tokens.",
        "tpm_limit_exceeded",
    )
    assert refused.headers["x-should-retry"] == "false"
    assert "retry-after" not in refused.headers
    assert "retry-after-ms" not in refused.headers
    assert limit_headers(refused) == {
        "x-ratelimit-limit-tokens": "50",
        "x-ratelimit-remaining-tokens": "50",
        "x-ratelimit-reset-tokens": "0s",
    }
    assert counted.provider.requests == []


# --- headers on every response of a limited key, and on no other ---------------------------


async def test_every_chat_response_of_a_limited_key_carries_its_standing_json_and_stream(
    counted: Harness,
) -> None:
    key = await counted.issue(rpm_limit=10, tpm_limit=10_000)

    answer = await counted.chat(key["key"])
    await counted.settled()
    async with counted.http.stream(
        "POST",
        "/v1/chat/completions",
        content=body_bytes(stream=True),
        headers={**bearer(key["key"]), "content-type": "application/json"},
    ) as stream:
        head = limit_headers(stream)  # on the response head, before any event is read
        events = (await stream.aread()).decode()

    assert limit_headers(answer) == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": str(10_000 - estimate()),
        "x-ratelimit-reset-tokens": "1m0s",
    }
    assert stream.status_code == 200
    assert events.endswith("data: [DONE]\n\n")
    assert RESET.fullmatch(head.pop("x-ratelimit-reset-requests"))
    assert RESET.fullmatch(head.pop("x-ratelimit-reset-tokens"))
    assert head == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "8",
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": str(10_000 - USED - estimate(stream=True)),
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_static_keys_and_unlimited_virtual_keys_get_no_rate_limit_headers(
    gateway: Harness, stream: bool
) -> None:
    unlimited = await gateway.issue()

    answers = [await gateway.chat(k, stream=stream) for k in (GATEWAY_KEY, unlimited["key"])]

    assert [a.status_code for a in answers] == [200, 200]
    assert [limit_headers(a) for a in answers] == [{}, {}]


# --- the settle of every way a response ends ------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "used"),
    [("json answer", USED), ("stream with usage", USED), ("upstream error", 0)],
)
async def test_a_response_settles_to_the_tokens_it_used(
    counted: Harness, ending: str, used: int
) -> None:
    key = await counted.issue(tpm_limit=10_000)
    stream = ending == "stream with usage"
    options = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    if ending == "upstream error":
        counted.provider.error = ProviderError("The upstream failed.")

    first = await counted.chat(key["key"], **options)
    counted.provider.error = None
    await counted.settled()
    following = await counted.chat(key["key"])

    assert first.status_code == (502 if ending == "upstream error" else 200)
    assert first.headers["x-ratelimit-remaining-tokens"] == str(10_000 - estimate(**options))
    assert following.headers["x-ratelimit-remaining-tokens"] == str(10_000 - used - estimate())


async def test_an_answer_without_usage_keeps_its_reservation(gateway: Harness) -> None:
    del gateway.provider.completion["usage"]
    key = await gateway.issue(tpm_limit=10_000)

    await gateway.chat(key["key"])
    following = await gateway.chat(key["key"])

    # Charged nothing, a tokens limit would not count an upstream that reports no usage.
    assert following.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 2 * estimate())


def scope_of(path: str, secret: str) -> dict[str, Any]:
    """An ASGI HTTP scope for a POST with a bearer key."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {secret}".encode())],
        "server": ("gateway", 80),
        "client": ("127.0.0.1", 1234),
    }


async def test_a_stream_the_caller_abandons_settles_to_the_prompt_and_the_chunks_relayed(
    counted: Harness, logs: list[MutableMapping[str, Any]]
) -> None:
    key = await counted.issue(tpm_limit=10_000)
    provider = counted.provider
    provider.hang_after = 2
    body = body_bytes(stream=True)
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await provider.hanging.wait()  # every chunk sent so far is relayed
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async with asyncio.timeout(2):
        await counted.app(scope_of("/v1/chat/completions", key["key"]), receive, send)
    await counted.settled()
    following = await counted.chat(key["key"])

    used = estimate_prompt_tokens(parsed(stream=True)) + provider.yielded
    assert provider.yielded == 2
    assert sent[0]["status"] == 200
    assert following.headers["x-ratelimit-remaining-tokens"] == str(10_000 - used - estimate())
    lines = [(e["status"], e["error_code"]) for e in logs if e.get("key_id") == key["id"]]
    assert lines == [(499, "client_closed"), (200, None)]


@dataclass
class SlowRedis:
    """A proxy to the test Redis that holds every reply for `delay_s` (0 to start with)."""

    url: str = ""
    delay_s: float = 0.0


@asynccontextmanager
async def slow_redis() -> AsyncIterator[SlowRedis]:
    """A SlowRedis listening on 127.0.0.1 for the block."""
    host, _, port = REDIS_URL.removeprefix("redis://").partition("/")[0].partition(":")
    proxy = SlowRedis()
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, slow: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if slow:
                    await asyncio.sleep(proxy.delay_s)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_connection(host, int(port or 6379))
        pipes.add(asyncio.ensure_future(pipe(reader, redis_writer, slow=False)))
        pipes.add(asyncio.ensure_future(pipe(redis_reader, writer, slow=True)))

    server = await asyncio.start_server(connect, "127.0.0.1", 0)
    proxy.url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    try:
        yield proxy
    finally:
        server.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


async def test_a_caller_that_leaves_during_its_admission_holds_no_lease(
    tmp_path: Path, scripted: ScriptedProvider
) -> None:
    with redis_prefix() as prefix:
        async with slow_redis() as proxy:
            settings = gateway_settings(
                tmp_path, redis_url=proxy.url, redis_prefix=prefix, redis_timeout_s=2.0
            )
            async with started(settings, scripted) as harness:
                warm = await harness.issue(rpm_limit=100)  # the script is loaded
                assert (await harness.chat(warm["key"])).status_code == 200
                key = await harness.issue(max_parallel_requests=1)
                proxy.delay_s = 0.3
                delivered = False

                async def receive() -> Message:
                    nonlocal delivered
                    if not delivered:
                        delivered = True
                        return {"type": "http.request", "body": body_bytes(), "more_body": False}
                    await asyncio.sleep(0.15)  # the admission's script is on its way
                    return {"type": "http.disconnect"}

                async def send(message: Message) -> None:
                    raise AssertionError(f"nothing is sent to a caller that left: {message}")

                # The request is cancelled after its script reached Redis, before the answer:
                # the lease it may hold must still be returned (not kept for 15 minutes).
                await harness.app(scope_of("/v1/chat/completions", key["key"]), receive, send)
                await asyncio.sleep(0.3)  # the script has run; any settle has been sent
                proxy.delay_s = 0.0
                await harness.settled()
                reached = len(scripted.requests)
                following = await harness.chat(key["key"])

    assert reached == 1  # the warm-up's: the caller left before its request went upstream
    assert following.status_code == 200


# --- models, the admin API's key, refused keys ----------------------------------------------


async def test_a_key_limited_to_some_models_sees_only_those(gateway: Harness) -> None:
    key = await gateway.issue(models=[UNIFIED_MODEL], rpm_limit=5)
    secret = key["key"]
    other = f"cerebras/{OTHER_MODEL}"

    allowed = await gateway.chat(secret)
    unified = await gateway.chat(secret, model=other)
    direct = await gateway.http.post(
        "/cerebras/v1/chat/completions", json=chat_body(model=OTHER_MODEL), headers=bearer(secret)
    )
    listed = await gateway.http.get("/v1/models", headers=bearer(secret))
    listed_direct = await gateway.http.get("/cerebras/v1/models", headers=bearer(secret))
    listed_all = await gateway.http.get("/v1/models", headers=bearer(GATEWAY_KEY))

    assert allowed.status_code == 200
    for refused, model in ((unified, other), (direct, OTHER_MODEL)):
        assert refused.status_code == 404
        assert refused.json() == error(
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
            param="model",
        )
        assert limit_headers(refused) == {}
    assert len(gateway.provider.requests) == 1
    card = {"object": "model", "created": 0, "owned_by": "cerebras"}
    assert listed.json() == {"object": "list", "data": [{"id": UNIFIED_MODEL, **card}]}
    assert listed_direct.json() == {"object": "list", "data": [{"id": MODEL, **card}]}
    assert [c["id"] for c in listed_all.json()["data"]] == [
        UNIFIED_MODEL,
        f"cerebras/{OTHER_MODEL}",
    ]


async def test_a_key_limited_to_some_models_sees_only_their_deployments(gateway: Harness) -> None:
    key = await gateway.issue(models=[UNIFIED_MODEL])
    other = f"cerebras/{OTHER_MODEL}"
    for model in (UNIFIED_MODEL, other):  # both deployments get a breaker
        assert (await gateway.chat(GATEWAY_KEY, model=model)).status_code == 200

    limited = await gateway.http.get("/v1/deployments/health", headers=bearer(key["key"]))
    everyone = await gateway.http.get("/v1/deployments/health", headers=bearer(GATEWAY_KEY))

    assert [d["deployment"] for d in limited.json()["data"]] == [UNIFIED_MODEL]
    assert sorted(d["deployment"] for d in everyone.json()["data"]) == [UNIFIED_MODEL, other]


async def test_the_admin_api_is_off_without_admin_keys(tmp_path: Path) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}")

    async with started(settings, ScriptedProvider()) as harness:
        listed = await harness.http.get("/admin/v1/keys", headers=bearer(GATEWAY_KEY))
        created = await harness.http.post("/admin/v1/keys", json={"name": "x"})

    off = error(
        "The admin API is off: set GATEWAY_ADMIN_KEYS to turn it on.",
        "invalid_request_error",
        "not_found",
    )
    assert (listed.status_code, listed.json()) == (404, off)
    assert (created.status_code, created.json()) == (404, off)


async def test_caller_keys_and_admin_keys_each_open_only_their_own_api(gateway: Harness) -> None:
    key = await gateway.issue()

    caller_on_admin = await gateway.http.get("/admin/v1/keys", headers=bearer(key["key"]))
    admin_on_chat = await gateway.chat(ADMIN_KEY)
    admin_on_models = await gateway.http.get("/v1/models", headers=bearer(ADMIN_KEY))

    incorrect = error("Incorrect API key provided.", "authentication_error", "invalid_api_key")
    for response in (caller_on_admin, admin_on_chat, admin_on_models):
        assert (response.status_code, response.json()) == (401, incorrect)
        assert response.headers["www-authenticate"] == "Bearer"
    assert gateway.provider.requests == []


async def test_an_expired_key_and_a_disabled_key_are_refused_with_their_reason(
    gateway: Harness,
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1)
    expiring = await gateway.issue(expires_at=expires.isoformat(), rpm_limit=5)
    disabled = await gateway.issue(rpm_limit=5)

    before = await gateway.chat(expiring["key"])
    await gateway.http.post(f"/admin/v1/keys/{disabled['id']}/disable", headers=bearer(ADMIN_KEY))
    await asyncio.sleep(max(0.0, expires.timestamp() - time.time()) + 0.05)
    expired = await gateway.chat(expiring["key"])
    refused = await gateway.chat(disabled["key"])

    assert before.status_code == 200
    for response, message in (
        (expired, "This API key has expired."),
        (refused, "This API key has been disabled."),
    ):
        assert response.status_code == 401
        assert response.json() == error(message, "authentication_error", "invalid_api_key")
        assert limit_headers(response) == {}


# --- when Redis cannot be reached -----------------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_limited_requests_follow_the_fail_mode_while_redis_is_unreachable(
    tmp_path: Path,
    scripted: ScriptedProvider,
    closed_port: int,
    logs: list[MutableMapping[str, Any]],
    mode: str,
) -> None:
    settings = gateway_settings(
        tmp_path, redis_url=f"redis://127.0.0.1:{closed_port}/0", limits_fail_mode=mode
    )
    async with started(settings, scripted) as harness:
        key = await harness.issue(rpm_limit=1)
        started_at = time.monotonic()
        sequential = [await harness.chat(key["key"]) for _ in range(5)]
        concurrent = await asyncio.gather(*(harness.chat(key["key"]) for _ in range(20)))
        elapsed = time.monotonic() - started_at
        static = await harness.chat(GATEWAY_KEY)

    answers = [*sequential, *concurrent]
    if mode == "open":  # admitted, uncounted: past the limit of 1, without headers
        assert [(a.status_code, limit_headers(a)) for a in answers] == [(200, {})] * 25
    else:
        for answer in answers:
            assert answer.status_code == 503
            assert answer.json() == error(
                "Rate limits cannot be checked right now; please retry shortly.",
                "api_error",
                "limits_unavailable",
            )
            assert answer.headers["retry-after"] == "1"
    assert elapsed < 1.0
    assert static.status_code == 200  # an unlimited key never asks Redis
    assert len(scripted.requests) == (26 if mode == "open" else 1)
    outages = [entry for entry in logs if entry["event"] == "limits_store_unreachable"]
    assert len(outages) == 1
    assert outages[0]["log_level"] == "warning"


# --- the request log line -------------------------------------------------------------------


async def test_the_request_log_line_names_the_key_and_its_team_never_the_secret(
    gateway: Harness, logs: list[MutableMapping[str, Any]]
) -> None:
    team = await gateway.http.post(
        "/admin/v1/teams", json={"name": "eng", "rpm_limit": 9}, headers=bearer(ADMIN_KEY)
    )
    key = await gateway.issue(team="eng")

    answer = await gateway.chat(key["key"])

    assert answer.headers["x-ratelimit-limit-requests"] == "9"
    line = next(
        entry for entry in logs if entry["event"] == "request" and entry["path"].startswith("/v1")
    )
    assert (line["key_id"], line["team"], line["status"]) == (key["id"], team.json()["id"], 200)
    assert key["key"] not in repr(logs)


async def test_a_value_the_database_cannot_store_is_a_400_not_a_503(gateway: Harness) -> None:
    # In the future, so the payload takes it; in UTC it is past the year 9999.
    response = await gateway.http.post(
        "/admin/v1/keys",
        json={"name": "far", "expires_at": "9999-12-31T23:59:59-14:00"},
        headers=bearer(ADMIN_KEY),
    )

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
