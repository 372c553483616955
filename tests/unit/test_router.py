"""Router over scripted in-process providers: the paths the HTTP tests cannot time exactly."""

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ai_gateway.config.file import BreakerConfig
from ai_gateway.errors import InvalidRequest, ModelNotFound, ProviderError
from ai_gateway.providers.registry import Registry
from ai_gateway.routing import router as router_module
from ai_gateway.routing.breaker import BreakerBoard, State
from ai_gateway.routing.route import Deployment, Policy, Route, Timeouts
from ai_gateway.routing.router import Router
from ai_gateway.schemas import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from tests.fakes import FakeProvider, chat_request, chunk_payloads, completion_payload

Step = Callable[[], Awaitable[None]]
NO_LIMITS = Timeouts()


async def no_wait() -> None:
    return None


@dataclass
class ScriptedProvider:
    """Each call first awaits its step (a delay, an event, an error) then answers."""

    name: str
    steps: list[Step] = field(default_factory=list)
    calls: int = 0
    closed: int = 0
    is_mock: bool = False
    connect_timeouts: list[float] = field(default_factory=list)

    async def _step(self) -> None:
        step = self.steps[self.calls] if self.calls < len(self.steps) else no_wait
        self.calls += 1
        await step()

    async def chat_completions(self, req: ChatCompletionRequest) -> ChatCompletionResponse:
        await self._step()
        return ChatCompletionResponse(completion_payload(text=f"from {self.name}"))

    async def stream_chat_completions(
        self, req: ChatCompletionRequest
    ) -> AsyncGenerator[list[ChatCompletionChunk], None]:
        try:
            await self._step()
            for data in chunk_payloads([self.name]):
                yield [ChatCompletionChunk(data)]
                await asyncio.sleep(0)
        finally:
            self.closed += 1

    def with_connect_timeout(self, seconds: float) -> "ScriptedProvider":
        self.connect_timeouts.append(seconds)
        return self


def sleeps(seconds: float) -> Step:
    return lambda: asyncio.sleep(seconds)


def raises(error: BaseException) -> Step:
    async def step() -> None:
        raise error

    return step


def waits_for(event: asyncio.Event) -> Step:
    async def step() -> None:
        await event.wait()

    return step


def router_for(*providers: Any, timeouts: Timeouts = NO_LIMITS, **policy: Any) -> Router:
    registry = Registry({p.name: p for p in providers})
    return Router(
        registry,
        aliases={},
        policy=Policy(**policy),
        timeouts=timeouts,
        breakers=BreakerBoard(BreakerConfig(consecutive_failures=1)),
    )


def route_of(
    router: Router, *providers: Any, timeouts: Timeouts = NO_LIMITS, **policy: Any
) -> Route:
    deployments = tuple(Deployment(p, "m", timeouts=timeouts) for p in providers)
    return Route("alias", deployments, Policy(**policy))


@pytest.mark.anyio
async def test_a_stream_within_its_total_time_ends_normally() -> None:
    fast = ScriptedProvider("fast")
    router = router_for(fast)
    route = route_of(router, fast, timeouts=Timeouts(total_s=5))

    served = await router.open_stream(route, chat_request(stream=True))
    rest = [chunk async for arrived in served.value.rest for chunk in arrived]

    assert served.value.first is not None
    assert rest[-1].data["usage"]["completion_tokens"] == 1
    assert fast.closed == 1


@pytest.mark.anyio
async def test_the_default_connect_timeout_makes_one_variant_per_provider() -> None:
    alpha = ScriptedProvider("alpha")
    router = router_for(alpha, timeouts=Timeouts(connect_s=1.5))

    for _ in range(3):
        await router.complete(router.route("alpha/m"), chat_request())

    assert alpha.connect_timeouts == [1.5]


def test_a_provider_model_route_is_made_once_and_the_kept_ones_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(router_module, "MAX_DIRECT_ROUTES", 3)
    alpha = ScriptedProvider("alpha")
    router = router_for(alpha)

    first = router.route("alpha/m")
    assert router.route("alpha/m") is first
    assert router.direct(alpha, "m") is first
    assert (first.name, first.deployments[0].model) == ("alpha/m", "m")
    for model in ("m2", "m3", "m4"):  # the fourth finds the router full: it starts afresh
        router.direct(alpha, model)

    assert router.route("alpha/m") is not first
    assert router.route("alpha/m").deployments[0].key == "alpha/m"


@pytest.mark.anyio
async def test_an_unexpected_exception_in_a_hedged_race_propagates_and_frees_the_probe() -> None:
    broken = ScriptedProvider("broken", [raises(RuntimeError("bug"))])
    router = router_for(broken)
    route = route_of(router, broken, ScriptedProvider("other"), hedge_after_s=5.0)

    with pytest.raises(RuntimeError, match="bug"):
        await router.complete(route, chat_request())

    assert router.breakers.get("broken/m").probing is False


@pytest.mark.anyio
async def test_when_both_hedged_streams_open_together_the_loser_is_closed() -> None:
    gate = asyncio.Event()
    slow, other = (
        ScriptedProvider("slow", [waits_for(gate)]),
        ScriptedProvider("other", [waits_for(gate)]),
    )
    router = router_for(slow, other)
    route = route_of(router, slow, other, hedge_after_s=0.01)

    async def open_later() -> None:
        await asyncio.sleep(0.05)
        gate.set()

    opener = asyncio.ensure_future(open_later())
    served = await router.open_stream(route, chat_request(stream=True))
    await opener
    await served.value.rest.aclose()

    assert slow.calls == other.calls == 1
    assert slow.closed + other.closed == 2  # the loser closed by the router, the winner by us


@pytest.mark.anyio
async def test_a_caller_error_from_the_hedge_waits_for_the_first_attempt() -> None:
    slow = ScriptedProvider("slow", [sleeps(0.2)])
    refusing = ScriptedProvider("refusing", [raises(InvalidRequest("only refusing refuses"))])
    router = router_for(slow, refusing)
    route = route_of(router, slow, refusing, hedge_after_s=0.01)

    served = await router.open_stream(route, chat_request(stream=True))
    await served.value.aclose()

    assert served.deployment.provider is slow
    assert router.breakers.get("refusing/m").current() is State.CLOSED


@pytest.mark.anyio
async def test_a_held_caller_error_is_returned_when_the_other_attempt_fails() -> None:
    failing = ScriptedProvider("failing")
    refusing = ScriptedProvider("refusing", [raises(InvalidRequest("bad input"))])
    untried = ScriptedProvider("untried")
    router = router_for(failing, refusing, untried)
    route = route_of(router, failing, refusing, untried, hedge_after_s=0.01)

    async def fail_late() -> None:
        await asyncio.sleep(0.1)
        raise ProviderError("down")

    failing.steps = [fail_late]
    with pytest.raises(InvalidRequest, match="bad input") as stopped:
        await router.complete(route, chat_request())

    assert untried.calls == 0
    assert stopped.value.attempts == 2


@pytest.mark.anyio
async def test_a_cancelled_request_cancels_its_hedged_attempts() -> None:
    first, second = (
        ScriptedProvider("first", [sleeps(30)]),
        ScriptedProvider("second", [sleeps(30)]),
    )
    router = router_for(first, second)
    route = route_of(router, first, second, hedge_after_s=0.01)

    task = asyncio.ensure_future(router.open_stream(route, chat_request(stream=True)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert first.closed == second.closed == 1
    assert not router.breakers.get("first/m").probing


@pytest.mark.anyio
async def test_a_failure_during_a_race_lets_the_next_deployment_start() -> None:
    slow = ScriptedProvider("slow", [sleeps(30)])
    failing = ScriptedProvider("failing", [raises(ProviderError("down"))])
    third = ScriptedProvider("third")
    router = router_for(slow, failing, third)
    route = route_of(router, slow, failing, third, hedge_after_s=0.05)

    served = await router.complete(route, chat_request())

    assert served.deployment.provider is third
    assert served.attempts == 3
    assert slow.calls == 1


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_the_transport_bound_cuts_each_attempt_within_a_longer_deadline(
    stream: bool,
) -> None:
    slow = ScriptedProvider("slow", [sleeps(30)])
    fine = ScriptedProvider("fine")
    router = router_for(slow, fine)
    router.transport_s = 0.1
    route = route_of(router, slow, fine, deadline_s=5)

    started = asyncio.get_running_loop().time()
    if stream:
        served_by = (await router.open_stream(route, chat_request(stream=True))).deployment
    else:
        served_by = (await router.complete(route, chat_request())).deployment

    assert served_by.provider is fine  # slow's attempt was cut at 0.1 s, and fell back
    assert asyncio.get_running_loop().time() - started < 2
    assert slow.calls == 1


@pytest.mark.anyio
async def test_nothing_is_tried_after_the_deadline() -> None:
    slow = ScriptedProvider("slow", [sleeps(30)])
    never = ScriptedProvider("never")
    router = router_for(slow, never)
    route = route_of(router, slow, never, deadline_s=0.1)

    with pytest.raises(ProviderError) as failure:
        await router.complete(route, chat_request())

    assert failure.value.code == "upstream_timeout"
    assert "within the request's time limit of 0.1 s" in failure.value.message
    assert never.calls == 0


@pytest.mark.anyio
async def test_a_fake_provider_route_serves_the_upstream_model_id() -> None:
    provider = FakeProvider(name="alpha")
    router = router_for(provider)

    served = await router.complete(router.direct(provider, "m-1"), chat_request())

    assert provider.requests[0].model == "m-1"
    assert served.deployment.key == "alpha/m-1"


def test_an_unknown_name_without_a_provider_lists_the_aliases() -> None:
    provider = FakeProvider(name="alpha")
    router = router_for(provider)
    router.aliases["smart"] = route_of(router, provider)

    with pytest.raises(ModelNotFound, match=r"neither an alias \(smart\) nor") as missing:
        router.route("smrt")

    assert missing.value.param == "model"


@pytest.mark.anyio
async def test_a_crash_finishing_with_the_winner_still_closes_the_winners_stream() -> None:
    gate = asyncio.Event()

    async def crash_after_gate() -> None:
        await gate.wait()
        raise RuntimeError("bug in b")

    a = ScriptedProvider("a", [waits_for(gate)])
    b = ScriptedProvider("b", [crash_after_gate])
    router = router_for(a, b)
    route = route_of(router, a, b, hedge_after_s=0.01)
    asyncio.get_running_loop().call_later(0.05, gate.set)

    with pytest.raises(RuntimeError, match="bug in b"):
        await router.open_stream(route, chat_request(stream=True))

    assert a.closed == 1


@pytest.mark.anyio
async def test_a_hedge_never_goes_to_an_open_circuit() -> None:
    a, b = ScriptedProvider("a", [sleeps(0.1)]), ScriptedProvider("b", [sleeps(30)])
    router = router_for(a, b)
    router.breakers.get("b/m").failed()  # open for its cooldown
    route = route_of(router, a, b, hedge_after_s=0.01)

    served = await router.complete(route, chat_request())

    assert served.deployment.provider is a
    assert b.calls == 0


@pytest.mark.anyio
async def test_an_attempt_cut_by_the_deadline_does_not_count_against_its_deployment() -> None:
    async def fail_after_sleep() -> None:
        await asyncio.sleep(0.08)
        raise ProviderError("a is down")

    a = ScriptedProvider("a", [fail_after_sleep])
    b = ScriptedProvider("b", [sleeps(5)])
    router = router_for(a, b)
    route = route_of(router, a, b, deadline_s=0.1)

    with pytest.raises(ProviderError, match="a is down"):  # more telling than the deadline
        await router.complete(route, chat_request())

    assert b.calls == 1
    assert router.breakers.get("b/m").consecutive == 0
    assert router.breakers.get("a/m").consecutive == 1


@pytest.mark.anyio
async def test_a_loser_that_fails_to_close_still_frees_every_probe() -> None:
    class BadClose(ScriptedProvider):
        async def stream_chat_completions(
            self, req: ChatCompletionRequest
        ) -> AsyncGenerator[list[ChatCompletionChunk], None]:
            try:
                async for arrived in super().stream_chat_completions(req):
                    yield arrived
            finally:
                raise ProviderError("reset while closing")

    gate = asyncio.Event()
    a, b = BadClose("a", [waits_for(gate)]), ScriptedProvider("b", [waits_for(gate)])
    router = router_for(a, b)
    route = route_of(router, a, b, hedge_after_s=0.01)
    asyncio.get_running_loop().call_later(0.05, gate.set)

    served = await router.open_stream(route, chat_request(stream=True))
    with contextlib.suppress(ProviderError):  # when the winner is the one that fails to close
        await served.value.aclose()

    for key in ("a/m", "b/m"):
        assert router.breakers.get(key).probing is False
