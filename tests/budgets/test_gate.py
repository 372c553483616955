"""BudgetGate: what a request reserves (its route's dearest deployment), the 429 of a budget
without room (message, type, code, headers), what a settle charges for each way a request
ends, and a request whose price is unknown."""

from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from ai_gateway.api.record import RequestRecord
from ai_gateway.app import shared_redis
from ai_gateway.budgets.gate import BudgetGate, budget_gate
from ai_gateway.budgets.memory import MemoryBudgets
from ai_gateway.budgets.redis_store import RedisBudgets
from ai_gateway.budgets.refusal import BudgetExceeded, usd
from ai_gateway.budgets.seeds import Seeds
from ai_gateway.budgets.store import Hold, SoftThreshold, Standing
from ai_gateway.budgets.unshared import UnsharedBudgets
from ai_gateway.config.file import GatewayConfig
from ai_gateway.db.engine import create_engine, database_url
from ai_gateway.errors import ServiceUnavailable
from ai_gateway.keys.caller import Budget, Caller, Limits, Period, Scope, Subject
from ai_gateway.limits.admission import Admission, LimitExceeded
from ai_gateway.limits.memory import MemoryLimiter
from ai_gateway.routing.route import Deployment, Route
from ai_gateway.schemas import ChatCompletionRequest, Usage
from ai_gateway.usage.prices import price_table
from tests.budgets.conftest import MIDNIGHT, NOW, Source
from tests.conftest import make_settings
from tests.fakes import FakeProvider, chat_body

pytestmark = pytest.mark.anyio

GPT_OSS = Route("fast", (Deployment(FakeProvider(), "gpt-oss-120b"),))
MIXED = Route(
    "mixed", (Deployment(FakeProvider(), "gpt-oss-120b"), Deployment(FakeProvider(), "zai-glm-4.7"))
)
UNPRICED = Route("local", (Deployment(FakeProvider(name="ollama"), "llama3"),))


def key(usd_limit: float = 1.0, period: Period = Period.DAY) -> Subject:
    return Subject(Scope.KEY, "key_1", Limits(), Budget(usd_limit, period))


def gate(source: Source | None = None) -> BudgetGate:
    soft = SoftThreshold(0.8)
    store = MemoryBudgets(Seeds(source or Source()), soft=soft, fail_open=False)
    return BudgetGate(store, price_table(GatewayConfig()), soft=soft, clock=NOW.timestamp)


def record(**fields: object) -> RequestRecord:
    made = RequestRecord("req_1", "POST", "/v1/chat/completions")
    for name, value in fields.items():
        setattr(made, name, value)
    return made


async def test_a_request_reserves_its_dearest_deployment_at_its_limits() -> None:
    budgets = gate()

    hold = await budgets.reserve(
        (key(10.0),), MIXED, prompt_tokens=1_000_000, completion_tokens=1_000_000
    )

    assert hold is not None
    assert hold.reserved == round((2.25 + 2.75) * 1e9)


async def test_a_caller_without_a_budget_reserves_nothing() -> None:
    budgets = gate()
    free = Subject(Scope.KEY, "key_2", Limits(rpm=5))

    assert await budgets.reserve((free,), GPT_OSS, prompt_tokens=1, completion_tokens=1) is None


async def test_the_429_names_the_owner_the_budget_and_the_reset() -> None:
    budgets = gate(Source(spent={"key_1": 1_000_000_000}))

    with pytest.raises(BudgetExceeded) as caught:
        await budgets.reserve((key(),), GPT_OSS, prompt_tokens=10, completion_tokens=10)

    error = caught.value
    assert error.status_code == 429
    assert error.envelope() == {
        "error": {
            "message": "Budget exceeded for key key_1: $1.00 per day ($1.00 used). It resets "
            f"at {(MIDNIGHT + timedelta(days=1)):%Y-%m-%dT%H:%M:%SZ}.",
            "type": "insufficient_quota",
            "param": None,
            "code": "budget_exceeded",
        }
    }
    wait_s = (MIDNIGHT + timedelta(days=1) - NOW).total_seconds()
    assert error.headers == {
        "x-should-retry": "false",
        "retry-after": str(int(wait_s)),
        "retry-after-ms": str(int(wait_s * 1000)),
    }


async def test_a_total_budget_never_resets_so_no_retry_after() -> None:
    budgets = gate(Source(spent={"key_1": 2_500_000_000}))

    with pytest.raises(BudgetExceeded) as caught:
        await budgets.reserve(
            (key(2.0, Period.TOTAL),), GPT_OSS, prompt_tokens=10, completion_tokens=10
        )

    assert caught.value.message == (
        "Budget exceeded for key key_1: $2.00 in total ($2.50 used). It does not reset: raise "
        "or remove the budget to continue."
    )
    assert caught.value.headers == {"x-should-retry": "false"}


async def test_a_request_dearer_than_the_whole_budget_is_told_so() -> None:
    budgets = gate()

    with pytest.raises(BudgetExceeded) as caught:
        await budgets.reserve(
            (key(0.0001),), GPT_OSS, prompt_tokens=10, completion_tokens=1_000_000
        )

    assert caught.value.message == (
        "Request too costly for key key_1: it may cost up to $0.7500035, the budget is $0.0001 "
        "per day. Send a shorter request or a lower max_tokens."
    )
    assert caught.value.headers == {"x-should-retry": "false"}


@pytest.mark.parametrize(
    ("fields", "charged"),
    [
        ({"cost_usd": 0.000123, "status": 200}, 123_000),
        ({"status": 200}, "reserved"),  # answered without usage
        ({"is_client_closed": True}, "reserved"),
        ({"status": 502, "error_code": "upstream_error"}, 0),
        ({"status": 429}, 0),
    ],
)
async def test_a_settle_charges_the_cost_or_the_reservation_or_nothing(
    fields: dict[str, object], charged: int | str
) -> None:
    budgets = gate()
    hold = await budgets.reserve((key(),), GPT_OSS, prompt_tokens=100, completion_tokens=100)
    assert isinstance(hold, Hold)

    budgets.settle(hold, record(**fields))

    spend = await budgets.spend(key())
    expected = hold.reserved if charged == "reserved" else charged
    assert spend.spent_usd == pytest.approx(expected / 1e9)


async def test_an_unpriced_route_reserves_nothing_and_its_cost_is_logged_unknown() -> None:
    budgets = gate()
    hold = await budgets.reserve((key(),), UNPRICED, prompt_tokens=100, completion_tokens=100)
    assert isinstance(hold, Hold)
    usage = Usage(prompt_tokens=100, completion_tokens=100, total_tokens=200)

    with capture_logs() as logs:
        budgets.settle(hold, record(status=200, usage=usage, provider="ollama", model="llama3"))
        budgets.settle(hold, record(status=200, usage=usage, provider="ollama", model="llama3"))

    assert hold.reserved == 0
    assert [entry["event"] for entry in logs] == ["budget_cost_unknown"]
    assert logs[0]["id"] == "key_1"
    assert (await budgets.spend(key())).spent_usd == 0.0


async def test_an_exhausted_budget_refuses_an_unpriced_request_too() -> None:
    budgets = gate(Source(spent={"key_1": 1_000_000_000}))

    with pytest.raises(BudgetExceeded):
        await budgets.reserve((key(),), UNPRICED, prompt_tokens=1, completion_tokens=1)


async def test_the_admin_view_of_spend() -> None:
    budgets = gate(Source(spent={"key_1": 850_000_000}))

    spend = await budgets.spend(key())

    assert (spend.period_start, spend.spent_usd, spend.soft_limit_reached) == (
        MIDNIGHT,
        0.85,
        True,
    )


async def test_an_unreadable_spend_is_shown_unknown() -> None:
    budgets = gate(Source(error=OSError("down")))

    spend = await budgets.spend(key())

    assert (spend.spent_usd, spend.soft_limit_reached) == (None, None)


@pytest.mark.parametrize(
    ("amount", "text"),
    [(12.5, "$12.50"), (0.000125, "$0.000125"), (1234.0, "$1,234.00"), (0.0, "$0.00")],
)
def test_amounts_are_written_in_dollars_to_the_digit_that_matters(amount: float, text: str) -> None:
    assert usd(amount) == text


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ({}, MemoryBudgets),
        ({"redis_url": "redis://127.0.0.1:6379/0"}, RedisBudgets),
        ({"ai_gateway_workers": 2}, UnsharedBudgets),
    ],
)
async def test_the_store_follows_the_deployment(overrides: dict[str, object], kind: type) -> None:
    settings = make_settings(**overrides)
    client = shared_redis(settings)
    engine = create_engine(database_url("sqlite:///unused.db"))

    budgets = budget_gate(settings, client, engine, price_table(GatewayConfig()))

    assert isinstance(budgets.store, kind)
    assert budgets.soft.fraction == settings.budget_soft_threshold == 0.8
    await budgets.aclose()
    if client is not None:
        await client.aclose()
    await engine.dispose()


async def test_several_workers_without_redis_refuse_a_budgeted_request() -> None:
    with pytest.raises(ServiceUnavailable) as caught:
        await UnsharedBudgets().reserve((), cost=1)

    assert caught.value.code == "budgets_unavailable"
    assert "Set REDIS_URL or run one worker." in caught.value.message


async def test_a_budget_resets_at_the_period_boundary() -> None:
    clock = [datetime(2026, 12, 3, 23, 59, 59, tzinfo=UTC).timestamp()]
    soft = SoftThreshold(0.8)
    store = MemoryBudgets(Seeds(Source()), soft=soft, fail_open=False)
    budgets = BudgetGate(store, price_table(GatewayConfig()), soft=soft, clock=lambda: clock[0])
    hold = await budgets.reserve((key(0.001),), GPT_OSS, prompt_tokens=10, completion_tokens=10)
    assert isinstance(hold, Hold)
    budgets.settle(hold, record(cost_usd=0.001, status=200))

    with pytest.raises(BudgetExceeded) as caught:
        await budgets.reserve((key(0.001),), GPT_OSS, prompt_tokens=10, completion_tokens=10)
    clock[0] += 1.0  # midnight UTC
    after = await budgets.reserve((key(0.001),), GPT_OSS, prompt_tokens=10, completion_tokens=10)

    assert caught.value.headers["retry-after-ms"] == "1000"
    assert isinstance(after, Hold)
    assert after.claims[0].start == datetime(2026, 12, 4, tzinfo=UTC)


async def test_a_hold_is_given_back_when_a_rate_limit_refuses_the_request() -> None:
    budgets = gate()
    admission = Admission(MemoryLimiter(), default_completion_tokens=10, budgets=budgets)
    both = Subject(Scope.KEY, "key_1", Limits(rpm=1), Budget(1.0, Period.DAY))
    caller = Caller("key_1", subjects=(both,))
    body = ChatCompletionRequest.from_body(chat_body())

    ticket = await admission.admit(caller, body, GPT_OSS)
    with pytest.raises(LimitExceeded):
        await admission.admit(caller, body, GPT_OSS)

    assert ticket is not None
    assert ticket.hold is not None
    claim = ticket.hold.claims[0]
    assert await budgets.store.standing(claim) == Standing(spent=0, held=ticket.hold.reserved)
    ticket.settle(record(cost_usd=0.000001, status=200))
    assert await budgets.store.standing(claim) == Standing(spent=1000, held=0)


async def test_a_budget_refusal_counts_against_no_rate_limit() -> None:
    budgets = gate(Source(spent={"key_1": 1_000_000_000}))
    limiter = MemoryLimiter()
    admission = Admission(limiter, default_completion_tokens=10, budgets=budgets)
    both = Subject(Scope.KEY, "key_1", Limits(rpm=1), Budget(1.0, Period.DAY))
    body = ChatCompletionRequest.from_body(chat_body())

    with pytest.raises(BudgetExceeded):
        await admission.admit(Caller("key_1", subjects=(both,)), body, GPT_OSS)

    assert limiter.subject_count == 0
