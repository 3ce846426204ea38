"""One request's life: budget, send, retry, and the answer turned into scores.

Every attempt, retries included, passes through the limiter first. Transient
failures (5xx, timeouts, resets) back off exponentially with full jitter; a 429, or a
503 with Retry-After, pauses the whole limiter for that long instead, so every worker
waits, not just the one that was told. Terminal answers (a 500 that says the revision
cannot be found among them) become scores; only 401 ends the run, unless a
:class:`~lwbatch.oauth.TokenRefresher` can replace the token: then the request is sent
once more with the new one.

A batch that used up its retries on a 500 is split to find the revision that fails it
(lwbatch/engine/splitting.py); a (model, wiki) that keeps failing the same way is given
up on (lwbatch/engine/faults.py). One dispatcher serves every `score()` call of a
Scorer: each call counts its own requests in the :class:`RunStats` it passes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio

from lwbatch.config import RetryPolicy
from lwbatch.engine.faults import BatchSplits, FailingWikis, Refusals, undeployed
from lwbatch.engine.splitting import Splitter
from lwbatch.engine.stats import RunStats
from lwbatch.errors import AuthenticationError, UnreachableError
from lwbatch.oauth import TokenRefresher
from lwbatch.protocol.answers import is_bearer_challenge, parse_answer
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.protocol.client import LiftWingClient, Reply, TransportFailure
from lwbatch.protocol.failures import MAX_MESSAGE, all_failed, error_text, read_error
from lwbatch.protocol.payloads import build_payload, parse_retry_after, read_retry_after
from lwbatch.results import ErrorType, Revision, Score
from lwbatch.seams import Limiter

__all__ = ["Dispatcher", "Stopped"]

log = logging.getLogger("lwbatch")


class Stopped(Exception):
    """The run is stopping: this job was not sent and stays unanswered."""


@dataclass(frozen=True, slots=True)
class _Retry:
    """An attempt that got no usable answer and may be tried again."""

    error: ErrorType  # TRANSIENT_ERROR or RATE_LIMITED
    cause: str
    detail: str | None = None
    # The limiter was paused (Retry-After): that wait holds this worker too.
    paused: bool = False
    status: int | None = None  # the HTTP status of an answer, None without one

    def message(self, attempts: int) -> str:
        text = f"{self.cause} after {attempts} attempt(s)"
        return text if self.detail is None else f"{text}: {self.detail}"


_RATE_LIMITED = _Retry(ErrorType.RATE_LIMITED, "HTTP 429")
# A 401 after which the token was replaced: send again, once.
_REFRESHED = _Retry(ErrorType.TRANSIENT_ERROR, "HTTP 401, token refreshed")


class _Call:
    """One job's requests: what is sent, for whom, and how many went so far."""

    __slots__ = ("spec", "rev_ids", "wiki", "payload", "stats", "revisit", "sent", "seconds")

    def __init__(
        self,
        spec: ModelSpec,
        revisions: Sequence[Revision],
        stats: RunStats,
        *,
        revisit: bool = False,
        sent: int = 0,
    ) -> None:
        self.spec = spec
        self.rev_ids = [r.rev_id for r in revisions]
        # A job holds revisions of one wiki (batches are grouped by it).
        self.wiki = revisions[0].wiki.dbname
        self.payload = build_payload(spec, revisions)
        self.stats = stats
        self.revisit = revisit  # a (model, wiki) given up on, tried again
        self.sent = sent  # requests these revisions were in
        self.seconds: float | None = None  # the last one's latency

    @property
    def pair(self) -> tuple[str, str]:
        return (self.spec.name, self.wiki)

    def stamp(self, score: Score) -> Score:
        if not self.sent:
            return score  # refused before any request left
        latency = None if self.seconds is None else round(self.seconds * 1000, 1)
        # Built directly: dataclasses.replace costs ~8 us per answer (cProfile).
        return Score(
            prediction=score.prediction,
            probability=score.probability,
            model_version=score.model_version,
            error=score.error,
            error_message=score.error_message,
            latency_ms=latency,
            attempts=self.sent,
            cacheable=score.cacheable,
        )


class Dispatcher:
    """Sends one job (a model and its revisions) and returns a score per revision."""

    def __init__(
        self,
        client: LiftWingClient,
        limiter: Limiter,
        *,
        retry: RetryPolicy,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        on_latency: Callable[[float], None] | None = None,
        limit: Callable[[], int] | None = None,
        rng: random.Random | None = None,
        refresher: TokenRefresher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._refresher = refresher
        # The in-flight cap in force, read when a new peak is reached (for the report).
        self._limit = limit
        self._on_latency = on_latency
        self._limiter = limiter
        self._policy = retry
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self.refusals = Refusals()
        self.stopping = False
        self.in_flight = 0
        self.answered = False  # any HTTP answer at all, whatever its status
        self._unreachable = 0  # connection failures in a row before any answer
        self._unreachable_reason = ""
        self._drained = anyio.Event()
        self.failing = FailingWikis(after=retry.server_fault_after, clock=clock)
        self.splits = BatchSplits(max_splits=retry.max_splits, clock=clock)
        self._splitter = Splitter(self.failing, self.splits, Stopped)

    def stop(self) -> None:
        """Send nothing more; requests already in flight may finish."""
        self.stopping = True
        if not self.in_flight:
            self._drained.set()

    async def drained(self) -> None:
        """Wait until no request is in flight (after :meth:`stop`)."""
        await self._drained.wait()

    async def send(
        self, spec: ModelSpec, revisions: Sequence[Revision], stats: RunStats
    ) -> list[Score]:
        """A score per revision, in their order; retries until each answer is final or
        the policy gives up. Rev_ids key the answer only inside this one request."""
        since = self.splits.now()
        # One job now and then tries a (model, wiki) given up on again.
        revisit = self.failing.revisit((spec.name, revisions[0].wiki.dbname))
        call = _Call(spec, revisions, stats, revisit=revisit)
        scores, failure = await self._try(call, self._policy.max_attempts)
        if failure is None:
            return scores

        async def try_once(
            piece: Sequence[Revision], sent: int
        ) -> tuple[list[Score], _Retry | None]:
            return await self._try(_Call(spec, piece, stats, sent=sent), 1)

        return await self._splitter.after_retries(
            spec, revisions, scores, failure, since, try_once, call.sent
        )

    async def _try(self, call: _Call, attempts: int) -> tuple[list[Score], _Retry | None]:
        """Scores for the call's revisions within `attempts` transient failures; the last
        failure too when they were used up."""
        policy = self._policy
        transient = rate_limited = 0
        n = len(call.rev_ids)
        while True:
            outcome = await self._attempt(call)
            if outcome is _REFRESHED:
                continue  # sent again with the new token
            if not isinstance(outcome, _Retry):
                scores = [call.stamp(outcome[rev_id]) for rev_id in call.rev_ids]
                for score in scores:
                    if score.error is ErrorType.UNSUPPORTED_WIKI:
                        self.refusals.wiki_unsupported(call.pair, score.error_message or "")
                return scores, None
            if outcome.error is ErrorType.RATE_LIMITED:
                # No backoff of its own: the limiter's pause (Retry-After) already holds
                # every worker, this one included.
                rate_limited += 1
                if rate_limited < policy.max_rate_limited:
                    continue
                message = f"{outcome.cause} {rate_limited} times in a row"
                return [call.stamp(Score.failed(outcome.error, message))] * n, None
            transient += 1
            if transient < attempts:
                if not outcome.paused:
                    await self._sleep(self._backoff(transient))
                continue
            failed = Score.failed(outcome.error, outcome.message(transient)[:MAX_MESSAGE])
            return [call.stamp(failed)] * n, outcome

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with full jitter (Brooker, "Exponential Backoff And
        Jitter", AWS Architecture Blog, 2015): uniform(0, min(max, base * 2**(n-1)))."""
        policy = self._policy
        # The exponent is capped only so that a huge max_attempts cannot overflow a float.
        ceiling = min(policy.backoff_max, policy.backoff_base * 2.0 ** min(failures - 1, 64))
        return self._rng.uniform(0.0, ceiling)

    def _check_reachable(self, failure: TransportFailure) -> None:
        # Until the endpoint has answered once, connection failures in a row mean a
        # wrong URL or no network: retrying every job would only repeat them. Once it
        # has answered, an outage is transient and retried like any other.
        if self.answered:
            return
        if failure.unreachable is None:
            self._unreachable = 0
            return
        self._unreachable += 1
        self._unreachable_reason = failure.unreachable
        if self._unreachable >= self._policy.unreachable_after:
            self.raise_if_never_reached()

    def raise_if_never_reached(self) -> None:
        """At the end of a run too: attempts were made, none connected, none answered."""
        if not self.answered and self._unreachable:
            # Other workers must not send what they hold while the run ends.
            self.stopping = True
            raise UnreachableError(
                url=self._client.endpoint.base_url,
                reason=self._unreachable_reason,
                attempts=self._unreachable,
            )

    def held_back(self, spec: ModelSpec, revisions: Sequence[Revision]) -> list[Score] | None:
        """The answers, sent for nothing, to a job the model already refused, else None."""
        rev_ids = [r.rev_id for r in revisions]
        wiki = revisions[0].wiki.dbname
        # A (model, wiki) given up on that is due to be tried again: the job goes.
        revisit = self.failing.due((spec.name, wiki))
        found = self._refused(spec, rev_ids, wiki, revisit=revisit)
        return None if found is None else [found[r] for r in rev_ids]

    def _refused(
        self, spec: ModelSpec, rev_ids: list[int], wiki: str, *, revisit: bool = False
    ) -> dict[int, Score] | None:
        refused = self.refusals.answer(spec.name, wiki, rev_ids)
        if refused is not None:
            return refused
        given_up = None if revisit else self.failing.refusal((spec.name, wiki))
        if given_up is not None:
            return dict.fromkeys(rev_ids, given_up)
        return None

    def _held_back(self, call: _Call) -> dict[int, Score] | None:
        """The answer for a job that must not be sent, or None if it may go."""
        refused = self._refused(call.spec, call.rev_ids, call.wiki, revisit=call.revisit)
        if refused is not None:
            return refused
        if self.stopping:
            raise Stopped
        return None

    async def _attempt(self, call: _Call) -> dict[int, Score] | _Retry:
        """One try: the scores, or what went wrong if it may be tried again."""
        if (refused := self._held_back(call)) is not None:
            return refused
        await self._limiter.acquire()
        # A 404 for this model, a refusal of this wiki, a stop or giving up on the
        # endpoint may have come while this job waited for the budget: then nothing leaves.
        if (refused := self._held_back(call)) is not None:
            return refused
        stats = call.stats
        stats.requests_sent += 1
        stats.mark_sent()
        call.sent += 1
        self.in_flight += 1
        stats.in_flight += 1
        if stats.in_flight > stats.peak_in_flight:
            stats.peak_in_flight = stats.in_flight
            if self._limit is not None:
                stats.limit_at_peak = self._limit()
        generation = self._refresher.generation if self._refresher is not None else 0
        try:
            reply = await self._client.post(call.spec, call.payload)
        except TransportFailure as exc:
            call.seconds = exc.elapsed
            if self._on_latency is not None:
                self._on_latency(exc.elapsed)
            stats.requests_by_outcome[exc.kind] += 1
            self._check_reachable(exc)
            return _Retry(ErrorType.TRANSIENT_ERROR, str(exc))
        finally:
            self.in_flight -= 1
            stats.in_flight -= 1
            if self.stopping and not self.in_flight:
                self._drained.set()
        self.answered = True
        call.seconds = reply.latency
        stats.requests_by_outcome[str(reply.status)] += 1
        stats.record_latency(call.spec.column, reply.latency)
        if self._on_latency is not None:
            self._on_latency(reply.latency)
        return await self._answer(call, reply, generation)

    async def _answer(
        self, call: _Call, reply: Reply, generation: int
    ) -> dict[int, Score] | _Retry:
        """What an HTTP answer means for the call's revisions."""
        spec, rev_ids, status = call.spec, call.rev_ids, reply.status
        refresher = self._refresher
        if refresher is not None and status != 401:
            refresher.accepted(generation)
        if 200 <= status < 300:
            self.failing.answered(call.pair)
            self.splits.final(call.pair)
            return parse_answer(spec, rev_ids, reply.body)
        if status == 429:
            self._limiter.pause(
                parse_retry_after(reply.retry_after, default=self._policy.default_retry_after)
            )
            return _RATE_LIMITED
        if status == 401:
            return await self._unauthorized(spec, reply, generation)
        if status == 404:
            self.refusals.not_deployed(spec.name)
            return undeployed(spec.name, rev_ids)
        text = error_text(reply.body)
        if status < 400:  # 1xx/3xx: nothing a model server should answer
            failed = Score.failed(ErrorType.BAD_RESPONSE, f"HTTP {status}: {text[:MAX_MESSAGE]}")
            return dict.fromkeys(rev_ids, failed)
        if status == 422 and (each := all_failed(text)) is not None and set(each) >= set(rev_ids):
            self.splits.final(call.pair)
            return each
        final = read_error(status, text, rev_ids)
        if final is not None:
            self.splits.final(call.pair)
            return dict.fromkeys(rev_ids, final)
        return self._retry(reply, text)

    async def _unauthorized(self, spec: ModelSpec, reply: Reply, generation: int) -> _Retry:
        """A 401: a new token and the request once more, if credentials can get one."""
        refresher = self._refresher
        if refresher is not None and refresher.may_refresh(generation):
            token = await refresher.refresh(generation)
            if token is not None:
                self._client.set_token(token)
                log.info(
                    "401: the token expired or was revoked; a new one came from %s "
                    "(a tier change takes effect only with a newly issued token)",
                    refresher.credentials.token_url,
                )
            return _REFRESHED
        raise AuthenticationError(
            url=self._client.endpoint.url(spec.name),
            token_sent=self._client.has_token,
            refreshed=refresher is not None and refresher.generation > 0,
            bearer_challenge=is_bearer_challenge(reply.www_authenticate),
        )

    def _retry(self, reply: Reply, text: str) -> _Retry:
        """An answer worth another try (the limiter paused if a 503 said how long)."""
        cause = f"HTTP {reply.status}"
        if reply.status == 503 and (seconds := read_retry_after(reply.retry_after)) is not None:
            self._limiter.pause(seconds)
            return _Retry(ErrorType.TRANSIENT_ERROR, cause, text, paused=True, status=503)
        return _Retry(ErrorType.TRANSIENT_ERROR, cause, text, status=reply.status)
