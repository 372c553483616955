"""Admission: a limited or budgeted caller's request is checked before the upstream call
against every budget of its key and team (reserving its most cost, budgets/) and then every
limit (reserving its estimated tokens), and settled to what it used and cost when the response
ends, whatever way it ends."""

from dataclasses import dataclass
from http import HTTPStatus

from ai_gateway.api.record import RequestRecord
from ai_gateway.budgets.gate import BudgetGate
from ai_gateway.budgets.store import Hold
from ai_gateway.config.constants import SHOULD_RETRY_HEADER
from ai_gateway.errors import RateLimited
from ai_gateway.keys.caller import Caller, Subject
from ai_gateway.limits.estimate import estimate
from ai_gateway.limits.headers import rate_limit_headers, retry_after_headers
from ai_gateway.limits.limiter import Denial, Dimension, Grant, Limiter
from ai_gateway.routing.route import Route
from ai_gateway.schemas import ChatCompletionRequest

LIMIT_NAMES = {
    Dimension.REQUESTS: "requests per minute",
    Dimension.TOKENS: "tokens per minute",
    Dimension.PARALLEL: "parallel requests",
}
LIMIT_CODES = {
    Dimension.REQUESTS: "rpm_limit_exceeded",
    Dimension.TOKENS: "tpm_limit_exceeded",
    Dimension.PARALLEL: "parallel_limit_exceeded",
}


class LimitExceeded(RateLimited):
    """One of the caller's own limits (its key's or its team's) refused the request."""


def limit_of(denial: Denial) -> int | None:
    """The refusing subject's limit in the refused dimension."""
    limits = denial.subject.limits
    return {
        Dimension.REQUESTS: limits.rpm,
        Dimension.TOKENS: limits.tpm,
        Dimension.PARALLEL: limits.parallel,
    }[denial.dimension]


def refusal(denial: Denial, *, tokens: int) -> LimitExceeded:
    """The 429 for a denial: which limit, of what, and when to retry."""
    owner = f"{denial.subject.scope.value} {denial.subject.id}"
    name = LIMIT_NAMES[denial.dimension]
    headers = {
        k.decode(): v.decode() for k, v in rate_limit_headers(denial.requests, denial.tokens)
    }
    if denial.is_too_large:
        message = (
            f"Request too large for {owner}: it may use about {tokens} tokens, the limit is "
            f"{limit_of(denial)} {name}. Send a shorter request or a lower max_tokens."
        )
        headers[SHOULD_RETRY_HEADER] = "false"
    else:
        message = f"Rate limit reached for {owner}: {limit_of(denial)} {name}. Retry later."
        headers.update(retry_after_headers(denial.retry_after_ms))
    return LimitExceeded(message, code=LIMIT_CODES[denial.dimension], headers=headers)


@dataclass(slots=True)
class Ticket:
    """An admitted request's claim on its limits (`grant`, None when no subject is limited)
    and budgets (`hold`), settled once when the response ends."""

    limiter: Limiter
    subjects: tuple[Subject, ...]
    grant: Grant | None
    prompt_tokens: int
    headers: list[tuple[bytes, bytes]]
    hold: Hold | None = None
    budgets: BudgetGate | None = None
    is_settled: bool = False

    def used_tokens(self, record: RequestRecord) -> int:
        """What the request used: the upstream's usage when it reported one; for a request cut
        short after the upstream began (the caller left, the stream broke), the prompt and the
        chunks relayed; for an answer (or a whole stream) without usage, the reservation;
        nothing for a request the upstream refused or never answered."""
        if record.usage is not None:
            return record.usage.prompt_tokens + record.usage.completion_tokens
        if record.is_client_closed or (record.chunks and record.error_code is not None):
            return self.prompt_tokens + record.chunks
        if record.status == HTTPStatus.OK and self.grant is not None:
            return self.grant.reserved_tokens
        return 0

    def settle(self, record: RequestRecord) -> None:
        """Replace the reservations with what was used and cost (the ledger has set the cost
        by now), and end the lease (once)."""
        if self.is_settled:
            return
        self.is_settled = True
        if self.grant is not None:
            self.limiter.settle(self.subjects, self.grant, tokens=self.used_tokens(record))
        if self.hold is not None and self.budgets is not None:
            self.budgets.settle(self.hold, record)


class Admission:
    """Checks limited and budgeted callers' requests against the budgets and the limiter."""

    def __init__(
        self,
        limiter: Limiter,
        *,
        default_completion_tokens: int,
        budgets: BudgetGate | None = None,
    ) -> None:
        self.limiter = limiter
        self.default_completion_tokens = default_completion_tokens
        self.budgets = budgets

    async def admit(
        self, caller: Caller, body: ChatCompletionRequest, route: Route | None = None
    ) -> Ticket | None:
        """A ticket for a limited or budgeted caller's admitted request (None for any other),
        or the 429 naming the budget or the limit. Budgets are checked first, so a request a
        budget refuses counts against no limit; a hold whose request a limit then refuses is
        given back."""
        subjects = caller.subjects
        if not subjects:
            return None
        total, prompt = estimate(body, default_completion_tokens=self.default_completion_tokens)
        hold = await self._hold(subjects, route, total, prompt)
        try:
            grant = await self._grant(subjects, total)
        except BaseException:
            if hold is not None and self.budgets is not None:
                self.budgets.release(hold)
            raise
        headers = [] if grant is None else rate_limit_headers(grant.requests, grant.tokens)
        return Ticket(self.limiter, subjects, grant, prompt, headers, hold, self.budgets)

    async def _hold(
        self, subjects: tuple[Subject, ...], route: Route | None, total: int, prompt: int
    ) -> Hold | None:
        """The request's hold on its budgets (None when none of its subjects has one)."""
        if self.budgets is None:
            return None
        return await self.budgets.reserve(
            subjects, route, prompt_tokens=prompt, completion_tokens=total - prompt
        )

    async def _grant(self, subjects: tuple[Subject, ...], total: int) -> Grant | None:
        """The limiter's grant (None when none of the subjects is limited), or the 429."""
        if not any(subject.limits.is_limited for subject in subjects):
            return None
        outcome = await self.limiter.admit(subjects, tokens=total)
        if isinstance(outcome, Denial):
            raise refusal(outcome, tokens=total)
        return outcome

    async def aclose(self) -> None:
        """Finish pending settles."""
        await self.limiter.aclose()
        if self.budgets is not None:
            await self.budgets.aclose()
