"""Three real `ai-gateway serve` processes sharing one PostgreSQL database and one Redis: a key's
and a team's limits are exact across the replicas (requests, parallel requests, tokens), a key
revoked on one replica is refused on the others within a second (through Redis, not the
periodic refresh), and the official SDK reads the 429 and the headers.

The processes start once for the module. The requests-per-minute burst runs first and its
`Retry-After` is honoured by the last test, about a minute later: the other tests run meanwhile.
"""

import asyncio
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import redis

from ai_gateway.api.body import parse_chat_request
from ai_gateway.config.constants import DEFAULT_COMPLETION_TOKENS_ESTIMATE, DEFAULT_MAX_JSON_DEPTH
from ai_gateway.limits.estimate import estimate_tokens
from tests.e2e.test_cli_process import base_env, free_port, gateway_command
from tests.fake_upstream import FakeUpstream, RecordedRequest, Reply, json_reply
from tests.fakes import GATEWAY_KEY, MODEL, UPSTREAM_KEY, completion_payload
from tests.services import REDIS_URL, postgres_database, redis_prefix

MODEL_ID = f"cerebras/{MODEL}"
ADMIN_KEY = "sk-admin-replicas-0123456789"
REPLICAS = 3
SLOW = "slow"
"""A prompt holding this word is answered after SLOW_S."""
SLOW_S = 1.0
USAGE = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}
"""What the upstream reports for every answer."""
RPM = 60
BURST = 300
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
REVOCATION_BOUND_S = 1.0
POLL_S = 0.05


def answer(request: RecordedRequest) -> Reply:
    """Every request gets a completion with USAGE; a slow prompt gets it after SLOW_S."""
    delay = SLOW_S if SLOW.encode() in request.body else 0.0
    return json_reply(completion_payload(usage=USAGE), delay=delay)


@dataclass
class Replica:
    """One gateway process and its logs."""

    url: str
    process: "subprocess.Popen[bytes]"
    stdout: Path
    stderr: Path


@dataclass
class Cluster:
    """The replicas, their upstream, their Redis prefix, and every secret issued through them."""

    replicas: list[Replica]
    upstream: FakeUpstream
    prefix: str
    secrets: list[str] = field(default_factory=list)

    def admin(self, method: str, path: str, body: Any = None, *, replica: int = 0) -> Any:
        """An admin API call on one replica; its JSON body (a 2xx is required)."""
        response = httpx.request(
            method,
            f"{self.replicas[replica].url}/admin/v1/{path}",
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=10,
        )
        assert response.is_success, response.text
        payload = response.json()
        if "key" in payload:
            self.secrets.append(payload["key"])
        return payload

    def create_key(self, **fields: Any) -> Any:
        """A new virtual key, issued on replica 1."""
        return self.admin("POST", "keys", {"name": "replicas", **fields})

    def upstream_calls(self, tag: str) -> int:
        """Requests the upstream received whose prompt holds `tag`."""
        return sum(tag.encode() in request.body for request in self.upstream.requests)


def start_replica(env: dict[str, str], directory: Path) -> Replica:
    """`ai-gateway serve` on a free port, its output in files."""
    directory.mkdir()
    port = free_port()
    stdout, stderr = directory / "stdout.log", directory / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(  # noqa: S603  # our own interpreter and module
            gateway_command(port), env=env, stdout=out, stderr=err, cwd=directory
        )
    return Replica(f"http://127.0.0.1:{port}", process, stdout, stderr)


def wait_until_healthy(replica: Replica, deadline: float) -> None:
    """Until /healthz answers; a process that exits first fails the fixture with its log."""
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise RuntimeError(f"gateway exited during start-up:\n{replica.stderr.read_text()}")
        try:
            if httpx.get(f"{replica.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"gateway did not become healthy:\n{replica.stderr.read_text()}")


def stop(replicas: list[Replica]) -> None:
    """SIGINT to every process, then wait for each; kill only one still alive."""
    for replica in replicas:
        if replica.process.poll() is None:
            replica.process.send_signal(signal.SIGINT)
    for replica in replicas:
        try:
            replica.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new PostgreSQL database (dropped afterwards), for synchronous fixtures."""
    # One loop for both ends: asyncio.run() would close the suspended generator (dropping the
    # database) as it shuts its loop down.
    loop = asyncio.new_event_loop()
    database = postgres_database()
    try:
        yield loop.run_until_complete(database.__aenter__())
    finally:
        loop.run_until_complete(database.__aexit__(None, None, None))
        loop.close()


def migrate(env: dict[str, str], directory: Path) -> None:
    """`ai-gateway db upgrade` with the gateway's environment; it must succeed."""
    upgrade = subprocess.run(  # our own interpreter and module
        [sys.executable, "-m", "ai_gateway", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
        check=False,
    )
    assert upgrade.returncode == 0, upgrade.stderr


def gateway_env(**extra: str) -> dict[str, str]:
    """A replica's environment: real mode against the fake upstream, JSON logs."""
    return base_env(
        GATEWAY_API_KEYS=GATEWAY_KEY,
        GATEWAY_ADMIN_KEYS=ADMIN_KEY,
        CEREBRAS_API_KEY=UPSTREAM_KEY,
        CEREBRAS_MOCK="false",
        LOG_FORMAT="json",
        **extra,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three replicas on one migrated PostgreSQL database and one Redis prefix; keys are
    refreshed from the database only every 300 s, so a revocation must come through Redis."""
    upstream = FakeUpstream()
    upstream.start()
    upstream.reply_with(answer)
    root = tmp_path_factory.mktemp("replicas")
    with fresh_postgres() as database, redis_prefix() as prefix:
        env = gateway_env(
            DATABASE_URL=database,
            REDIS_URL=REDIS_URL,
            REDIS_PREFIX=prefix,
            CEREBRAS_BASE_URL=upstream.url,
            KEY_CACHE_REFRESH_S="300",
        )
        migrate(env, root)
        replicas: list[Replica] = []
        try:
            for index in range(REPLICAS):
                replicas.append(start_replica(env, root / f"replica-{index + 1}"))
            deadline = time.monotonic() + START_TIMEOUT_S
            for replica in replicas:
                wait_until_healthy(replica, deadline)
            yield Cluster(replicas, upstream, prefix)
        finally:
            stop(replicas)
            upstream.stop()


def chat_bytes(content: str, **params: Any) -> bytes:
    """A chat request body, as sent."""
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], **params}
    return orjson.dumps(body)


@asynccontextmanager
async def async_client() -> AsyncIterator[httpx.AsyncClient]:
    """A client that opens as many connections as a burst needs."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        yield http


async def chat(
    http: httpx.AsyncClient, replica: Replica, secret: str, content: str, **params: Any
) -> httpx.Response:
    """One chat completion request to one replica."""
    return await http.post(
        f"{replica.url}/v1/chat/completions",
        content=chat_bytes(content, **params),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )


@dataclass(frozen=True)
class Answer:
    """A response and when it arrived (monotonic clock)."""

    response: httpx.Response
    at: float

    @property
    def status(self) -> int:
        return self.response.status_code


async def burst(
    cluster: Cluster, secrets: list[str], count: int, content: str, **params: Any
) -> list[Answer]:
    """`count` concurrent requests, round-robin over the replicas (and over `secrets`)."""
    replicas = cluster.replicas

    async def one(http: httpx.AsyncClient, index: int) -> Answer:
        secret = secrets[index % len(secrets)]
        response = await chat(http, replicas[index % len(replicas)], secret, content, **params)
        return Answer(response, time.monotonic())

    async with async_client() as http:
        return list(await asyncio.gather(*(one(http, index) for index in range(count))))


def statuses(answers: list[Answer]) -> dict[int, int]:
    """How many answers had each status."""
    counted: dict[int, int] = {}
    for item in answers:
        counted[item.status] = counted.get(item.status, 0) + 1
    return counted


def rate_limit_error(message: str, code: str) -> Any:
    return {"error": {"message": message, "type": "rate_limit_error", "param": None, "code": code}}


def authentication_error(message: str) -> Any:
    return {
        "error": {
            "message": message,
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def retry_after_is_consistent(headers: Mapping[str, str]) -> bool:
    """Retry-After is retry-after-ms in whole seconds, rounded up (at least 1)."""
    ms = int(headers["retry-after-ms"])
    return int(headers["retry-after"]) == max(1, math.ceil(ms / 1000))


def estimate_of(body: bytes) -> int:
    """What the gateway reserves for a body, computed by its own estimate."""
    request = parse_chat_request(body, max_depth=DEFAULT_MAX_JSON_DEPTH)
    return estimate_tokens(request, default_completion_tokens=DEFAULT_COMPLETION_TOKENS_ESTIMATE)


@dataclass(frozen=True)
class RpmBurst:
    """The requests-per-minute burst of the module's start: its key and its answers."""

    key: Any
    tag: str
    answers: list[Answer]


@pytest.fixture(scope="module")
def rpm_burst(cluster: Cluster) -> RpmBurst:
    """BURST concurrent requests of a key with rpm_limit RPM, spread over the replicas."""
    key = cluster.create_key(rpm_limit=RPM)
    tag = "rpm-burst"
    answers = asyncio.run(burst(cluster, [key["key"]], BURST, tag))
    return RpmBurst(key, tag, answers)


def test_a_requests_per_minute_limit_admits_exactly_its_limit_across_the_replicas(
    rpm_burst: RpmBurst, cluster: Cluster
) -> None:
    key, answers = rpm_burst.key, rpm_burst.answers
    admitted = [a.response for a in answers if a.status == 200]
    refused = [a.response for a in answers if a.status == 429]
    message = f"Rate limit reached for key {key['id']}: {RPM} requests per minute. Retry later."

    assert statuses(answers) == {200: RPM, 429: BURST - RPM}
    assert cluster.upstream_calls(rpm_burst.tag) == RPM
    # Each admission was counted once, atomically: every remaining count appears exactly once.
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted)
    assert remaining == list(range(RPM))
    for response in refused:
        assert response.json() == rate_limit_error(message, "rpm_limit_exceeded")
        assert response.headers["x-ratelimit-limit-requests"] == str(RPM)
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")
        assert 0 < int(response.headers["retry-after-ms"]) <= 60_000
        assert retry_after_is_consistent(response.headers)
        assert "x-ratelimit-limit-tokens" not in response.headers


@pytest.mark.anyio
async def test_a_parallel_limit_admits_exactly_its_limit_and_frees_leases_at_the_end(
    cluster: Cluster,
) -> None:
    key = cluster.create_key(max_parallel_requests=5)
    message = f"Rate limit reached for key {key['id']}: 5 parallel requests. Retry later."

    answers = await burst(cluster, [key["key"]], 30, f"parallel {SLOW}")
    await asyncio.sleep(0.2)  # the last settles (leases returned) reach Redis
    started = time.monotonic()
    again = await burst(cluster, [key["key"]], 5, "parallel again")
    again_s = time.monotonic() - started

    assert statuses(answers) == {200: 5, 429: 25}
    for item in answers:
        if item.status == 429:
            assert item.response.json() == rate_limit_error(message, "parallel_limit_exceeded")
            assert item.response.headers["retry-after"] == "1"
            assert item.response.headers["retry-after-ms"] == "1000"
    assert statuses(again) == {200: 5}
    assert again_s < SLOW_S
    assert cluster.upstream_calls("parallel") == 10


def tokens_counted(cluster: Cluster, key_id: str) -> int:
    """The tokens Redis counts for a key in the current window."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        total = client.hget(f"{cluster.prefix}:key:{key_id}:wts", "_sum")
    finally:
        client.close()
    return int(total or 0)


async def settled(cluster: Cluster, key_id: str, expected: int) -> int:
    """The key's counted tokens once they reach `expected` (settles are sent in the
    background), or what they are after a second."""
    deadline = time.monotonic() + 1.0
    counted = tokens_counted(cluster, key_id)
    while counted != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        counted = tokens_counted(cluster, key_id)
    return counted


def remaining_tokens(answers: list[Answer]) -> list[int]:
    """The x-ratelimit-remaining-tokens of the admitted answers, largest first."""
    admitted = [a.response for a in answers if a.status == 200]
    return sorted((int(r.headers["x-ratelimit-remaining-tokens"]) for r in admitted), reverse=True)


@pytest.mark.anyio
async def test_a_tokens_limit_admits_what_the_reservations_fit_then_what_the_settles_free(
    cluster: Cluster,
) -> None:
    limit = 1000
    key = cluster.create_key(tpm_limit=limit)
    content = f"tokens {SLOW}"
    estimate = estimate_of(chat_bytes(content, max_tokens=100))
    used = USAGE["total_tokens"]
    first_fit = limit // estimate
    second_fit = (limit - (first_fit + 1) * used) // estimate
    message = f"Rate limit reached for key {key['id']}: {limit} tokens per minute. Retry later."

    first = await burst(cluster, [key["key"]], 20, content, max_tokens=100)
    after_first = await settled(cluster, key["id"], first_fit * used)
    async with async_client() as http:
        one = await chat(http, cluster.replicas[1], key["key"], content, max_tokens=100)
    after_one = await settled(cluster, key["id"], (first_fit + 1) * used)
    second = await burst(cluster, [key["key"]], 20, content, max_tokens=100)
    after_second = await settled(cluster, key["id"], (first_fit + 1 + second_fit) * used)

    # 42 bytes of messages // 4 + 1, + max_tokens 100
    assert (estimate, first_fit, second_fit) == (111, 9, 4)
    assert statuses(first) == {200: first_fit, 429: 20 - first_fit}
    assert remaining_tokens(first) == [limit - estimate * n for n in range(1, first_fit + 1)]
    for item in first:
        if item.status == 429:
            assert item.response.json() == rate_limit_error(message, "tpm_limit_exceeded")
            assert retry_after_is_consistent(item.response.headers)
    # Settled to the upstream's usage, the reservations gave back room.
    assert after_first == first_fit * used
    assert one.status_code == 200
    assert one.headers["x-ratelimit-remaining-tokens"] == str(limit - first_fit * used - estimate)
    assert after_one == (first_fit + 1) * used
    assert statuses(second) == {200: second_fit, 429: 20 - second_fit}
    room = limit - (first_fit + 1) * used
    assert remaining_tokens(second) == [room - estimate * n for n in range(1, second_fit + 1)]
    assert after_second == (first_fit + 1 + second_fit) * used
    # Settles only ever lowered the count: the window never held more than the limit.
    assert after_second <= limit
    assert cluster.upstream_calls("tokens") == first_fit + 1 + second_fit


@pytest.mark.anyio
async def test_a_team_limit_is_shared_by_its_keys_across_the_replicas(cluster: Cluster) -> None:
    team = cluster.admin("POST", "teams", {"name": "replicas-team", "rpm_limit": 20})
    keys = [cluster.create_key(team=team["id"]) for _ in range(2)]
    message = f"Rate limit reached for team {team['id']}: 20 requests per minute. Retry later."

    answers = await burst(cluster, [k["key"] for k in keys], 60, "team")

    assert statuses(answers) == {200: 20, 429: 40}
    for item in answers:
        if item.status == 429:
            assert item.response.json() == rate_limit_error(message, "rpm_limit_exceeded")
        assert item.response.headers["x-ratelimit-limit-requests"] == "20"
    assert cluster.upstream_calls("team") == 20


async def refused_within(
    cluster: Cluster, secret: str, act: Callable[[], Awaitable[None]], tag: str
) -> list[tuple[float, Any]]:
    """Run `act` (on replica 1), then poll replicas 2 and 3 every POLL_S with `secret` until
    each refuses it: the seconds from the start of `act` to each refusal, and its body."""
    async with async_client() as http:
        for replica in cluster.replicas[1:]:
            assert (await chat(http, replica, secret, tag)).status_code == 200
        started = time.monotonic()
        await act()

        async def poll(replica: Replica) -> tuple[float, Any]:
            while time.monotonic() - started < 5 * REVOCATION_BOUND_S:
                response = await chat(http, replica, secret, tag)
                if response.status_code == 401:
                    return time.monotonic() - started, response.json()
                await asyncio.sleep(POLL_S)
            raise AssertionError(f"still admitted on {replica.url}")

        return list(await asyncio.gather(*(poll(r) for r in cluster.replicas[1:])))


@pytest.mark.anyio
async def test_a_disabled_key_is_refused_on_the_other_replicas_within_a_second(
    cluster: Cluster, record_property: Callable[[str, object], None]
) -> None:
    key = cluster.create_key()

    async def disable() -> None:
        await asyncio.to_thread(cluster.admin, "POST", f"keys/{key['id']}/disable")

    refusals = await refused_within(cluster, key["key"], disable, "revoked")

    record_property("disabled_refused_after_s", [round(s, 3) for s, _ in refusals])
    for seconds, body in refusals:
        assert seconds < REVOCATION_BOUND_S
        assert body == authentication_error("This API key has been disabled.")


@pytest.mark.anyio
async def test_a_deleted_key_is_refused_on_the_other_replicas_within_a_second(
    cluster: Cluster, record_property: Callable[[str, object], None]
) -> None:
    key = cluster.create_key()

    async def delete() -> None:
        await asyncio.to_thread(cluster.admin, "DELETE", f"keys/{key['id']}")

    refusals = await refused_within(cluster, key["key"], delete, "revoked")

    record_property("deleted_refused_after_s", [round(s, 3) for s, _ in refusals])
    for seconds, body in refusals:
        assert seconds < REVOCATION_BOUND_S
        assert body == authentication_error("Incorrect API key provided.")


@pytest.mark.anyio
async def test_a_rotated_keys_old_secret_is_refused_on_the_other_replicas_within_a_second(
    cluster: Cluster, record_property: Callable[[str, object], None]
) -> None:
    key = cluster.create_key()
    rotated: list[Any] = []

    async def rotate() -> None:
        path = f"keys/{key['id']}/rotate"
        rotated.append(await asyncio.to_thread(cluster.admin, "POST", path, {"grace_period_s": 0}))

    refusals = await refused_within(cluster, key["key"], rotate, "revoked")
    async with async_client() as http:
        new = [await chat(http, r, rotated[0]["key"], "revoked") for r in cluster.replicas]

    record_property("rotated_refused_after_s", [round(s, 3) for s, _ in refusals])
    for seconds, body in refusals:
        assert seconds < REVOCATION_BOUND_S
        assert body == authentication_error("Incorrect API key provided.")
    assert [response.status_code for response in new] == [200, 200, 200]


def test_the_openai_sdk_sees_the_limits_headers_and_a_rate_limit_error(cluster: Cluster) -> None:
    key = cluster.create_key(rpm_limit=2)
    client = openai.OpenAI(
        base_url=f"{cluster.replicas[2].url}/v1", api_key=key["key"], max_retries=0
    )
    messages: Any = [{"role": "user", "content": "sdk"}]

    raw = client.chat.completions.with_raw_response.create(model=MODEL_ID, messages=messages)
    client.chat.completions.create(model=MODEL_ID, messages=messages)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL_ID, messages=messages)

    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.parse().usage is not None
    error = caught.value
    assert error.status_code == 429
    assert error.code == "rpm_limit_exceeded"
    assert error.body == {
        "message": f"Rate limit reached for key {key['id']}: 2 requests per minute. Retry later.",
        "type": "rate_limit_error",
        "param": None,
        "code": "rpm_limit_exceeded",
    }
    headers = error.response.headers
    assert retry_after_is_consistent(headers)
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == (
        "2",
        "0",
    )
    assert headers["x-ratelimit-reset-requests"].endswith("s")


def test_a_replica_refuses_to_start_on_a_postgres_schema_that_was_not_upgraded(
    tmp_path: Path,
) -> None:
    with fresh_postgres() as database:
        result = subprocess.run(  # noqa: S603  # our own interpreter and module
            gateway_command(free_port()),
            env=gateway_env(DATABASE_URL=database, CEREBRAS_BASE_URL="http://127.0.0.1:9"),
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            check=False,
        )

    assert result.returncode == 3  # uvicorn's start-up failure
    assert "run `ai-gateway db upgrade` with the same DATABASE_URL" in result.stderr
    assert "revision none" in result.stderr


def request_lines(replica: Replica) -> list[dict[str, Any]]:
    """The `request` log lines of a replica."""
    lines = [
        json.loads(line) for line in replica.stderr.read_text().splitlines() if line[:1] == "{"
    ]
    return [line for line in lines if line.get("event") == "request"]


def test_request_logs_name_the_key_and_team_and_never_a_secret(cluster: Cluster) -> None:
    team = cluster.admin("POST", "teams", {"name": "logged-team"})
    key = cluster.create_key(team=team["id"])
    for replica in cluster.replicas:
        response = httpx.post(
            f"{replica.url}/v1/chat/completions",
            content=chat_bytes("logged"),
            headers={"Authorization": f"Bearer {key['key']}", "Content-Type": "application/json"},
        )
        assert response.status_code == 200
    time.sleep(0.2)

    for replica in cluster.replicas:
        chats = [
            (line["key_id"], line["team"], line["status"])
            for line in request_lines(replica)
            if line["key_id"] == key["id"]
        ]
        assert chats == [(key["id"], team["id"], 200)]
    logs = "".join(r.stderr.read_text() + r.stdout.read_text() for r in cluster.replicas)
    assert len(cluster.secrets) >= 10
    for secret in [*cluster.secrets, ADMIN_KEY, GATEWAY_KEY, UPSTREAM_KEY]:
        assert secret not in logs


def test_a_retry_after_the_last_429s_retry_after_is_admitted(
    rpm_burst: RpmBurst, cluster: Cluster
) -> None:
    last = max((a for a in rpm_burst.answers if a.status == 429), key=lambda a: a.at)
    wait_s = int(last.response.headers["retry-after-ms"]) / 1000
    time.sleep(max(0.0, last.at + wait_s - time.monotonic()))

    retry = httpx.post(
        f"{cluster.replicas[1].url}/v1/chat/completions",
        content=chat_bytes(rpm_burst.tag),
        headers={
            "Authorization": f"Bearer {rpm_burst.key['key']}",
            "Content-Type": "application/json",
        },
    )

    assert retry.status_code == 200
    assert int(retry.headers["x-ratelimit-remaining-requests"]) < RPM
    assert cluster.upstream_calls(rpm_burst.tag) == RPM + 1
