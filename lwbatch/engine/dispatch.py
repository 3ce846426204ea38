"""One request's life: budget, send, retry, and the answer turned into scores.

Every attempt, retries included, passes through the limiter first. Transient
failures (5xx, timeouts, resets) back off exponentially with full jitter; a 429, or a
503 with Retry-After, pauses the whole limiter for that long instead, so every worker
waits, not just the one that was told. Terminal answers (a 500 that says the revision
cannot be found among them) become scores; only 401 ends the run, unless a
:class:`~lwbatch.oauth.TokenRefresher` can replace the token: then the request is sent
once more with the new one.

A batch that used up its retries on a 5xx while other batches of its (model, wiki)
are answered is split in halves, one attempt per piece, down to the revision that
fails it; a (model, wiki) that keeps failing the same way is given up on
(lwbatch/engine/faults.py).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import anyio

from lwbatch.config import RetryPolicy
from lwbatch.engine.faults import BatchSplits, FailingWikis, Pair
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
class _Tally:
    """The requests one job has sent so far, and the last one's latency."""

    __slots__ = ("seconds", "sent")

    def __init__(self, sent: int = 0) -> None:
        self.sent = sent
        self.seconds: float | None = None

    def stamp(self, score: Score) -> Score:
        if not self.sent:
            return score  # refused before any request left
        latency = None if self.seconds is None else round(self.seconds * 1000, 1)
        return replace(score, latency_ms=latency, attempts=self.sent)


_REFRESHED = _Retry(ErrorType.TRANSIENT_ERROR, "HTTP 401, token refreshed")
_NOT_SENT = "not sent: the run stopped while its batch was being split"


class _Split:
    """One batch being split: its model, (model, wiki), first attempt, and the failure
    its revisions keep where they are not sent; when `probing`, a failing piece is split
    though the pair answered nothing (to find out whether it answers anything)."""

    __slots__ = ("spec", "pair", "since", "failed", "size", "probing")

    def __init__(
        self, spec: ModelSpec, pair: Pair, since: float, failed: Score, size: int, *, probing: bool
    ) -> None:
        self.spec = spec
        self.pair = pair
        self.since = since
        self.failed = failed
        self.size = size
        self.probing = probing


class Dispatcher:
    """Sends one job (a model and its revisions) and returns a score per revision."""

    def __init__(
        self,
        client: LiftWingClient,
        limiter: Limiter,
        stats: RunStats,
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
        self._stats = stats
        self._policy = retry
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self.undeployed: set[str] = set()
        # (model, wiki) the model said it does not serve, with what it said: never asked
        # again, and every row of it gets the same message.
        self.unsupported: dict[tuple[str, str], str] = {}
        self.stopping = False
        self.in_flight = 0
        self.answered = False  # any HTTP answer at all, whatever its status
        self._unreachable = 0  # connection failures in a row before any answer
        self._unreachable_reason = ""
        self._drained = anyio.Event()
        self.failing = FailingWikis(after=retry.server_fault_after, clock=clock)
        self.splits = BatchSplits(max_splits=retry.max_splits, clock=clock)

    def stop(self) -> None:
        """Send nothing more; requests already in flight may finish."""
        self.stopping = True
        if not self.in_flight:
            self._drained.set()

    async def drained(self) -> None:
        """Wait until no request is in flight (after :meth:`stop`)."""
        await self._drained.wait()

    async def send(self, spec: ModelSpec, revisions: Sequence[Revision]) -> list[Score]:
        """A score per revision, in their order; retries until each answer is final or
        the policy gives up. Rev_ids key the answer only inside this one request."""
        tally = _Tally()
        since = self.splits.now()
        # One job now and then tries a (model, wiki) given up on again.
        revisit = self.failing.revisit((spec.name, revisions[0].wiki.dbname))
        attempts = self._policy.max_attempts
        scores, failure = await self._try(spec, revisions, attempts, tally, revisit=revisit)
        if failure is not None:
            return await self._after(spec, revisions, scores, failure, tally, since)
        return scores

    async def _try(
        self,
        spec: ModelSpec,
        revisions: Sequence[Revision],
        attempts: int,
        tally: _Tally,
        *,
        revisit: bool = False,
    ) -> tuple[list[Score], _Retry | None]:
        """Scores for `revisions` within `attempts` transient failures; the last failure
        too when they were used up."""
        rev_ids = [r.rev_id for r in revisions]
        # A job holds revisions of one wiki (batches are grouped by it).
        wiki = revisions[0].wiki.dbname
        payload = build_payload(spec, revisions)
        policy = self._policy
        transient = rate_limited = 0
        while True:
            outcome = await self._attempt(spec, rev_ids, payload, wiki, tally, revisit)
            if outcome is _REFRESHED:
                continue  # sent again with the new token
            if not isinstance(outcome, _Retry):
                scores = [tally.stamp(outcome[rev_id]) for rev_id in rev_ids]
                for score in scores:
                    if score.error is ErrorType.UNSUPPORTED_WIKI:
                        self.unsupported.setdefault((spec.name, wiki), score.error_message or "")
                return scores, None
            if outcome.error is ErrorType.RATE_LIMITED:
                # No backoff of its own: the limiter's pause (Retry-After) already holds
                # every worker, this one included.
                rate_limited += 1
                if rate_limited < policy.max_rate_limited:
                    continue
                message = f"{outcome.cause} {rate_limited} times in a row"
                return [tally.stamp(Score.failed(outcome.error, message))] * len(rev_ids), None
            transient += 1
            if transient < attempts:
                if not outcome.paused:
                    await self._sleep(self._backoff(transient))
                continue
            failed = Score.failed(outcome.error, outcome.message(transient)[:MAX_MESSAGE])
            return [tally.stamp(failed)] * len(rev_ids), outcome

    async def _after(
        self,
        spec: ModelSpec,
        revisions: Sequence[Revision],
        scores: list[Score],
        failure: _Retry,
        tally: _Tally,
        since: float,
    ) -> list[Score]:
        """A job whose retries were used up (the first attempt at `since`): split a batch
        to find the revision that fails it, else count it towards giving up on its
        (model, wiki)."""
        pair = (spec.name, revisions[0].wiki.dbname)
        status = failure.status or 0
        if status == 500 and len(revisions) > 1:
            allowed = await self.splits.may_split(pair, since)
            if allowed is not False:
                split = _Split(
                    spec, pair, since, scores[0], len(revisions), probing=allowed is None
                )
                try:
                    return await self._split(split, revisions, tally)
                finally:
                    if split.probing:
                        self.splits.probed(pair, since)
        self.failing.failed(pair, status, failure.detail or "")
        return scores

    async def _split(
        self, split: _Split, revisions: Sequence[Revision], tally: _Tally
    ) -> list[Score]:
        """Halves, one attempt each (the batch has had its retries). A failing half is
        split again while the (model, wiki) answers others. A probe goes down the first
        failing half alone; where that met no answer at all (an outage), the other half
        is not sent and keeps the batch's failure."""
        half = len(revisions) // 2
        found: list[Score] = []
        paid = descended = False
        for piece in (revisions[:half], revisions[half:]):
            if descended and not self.splits.answered_since(split.pair, split.since):
                found += [split.failed] * len(piece)
                continue
            piece_tally = _Tally(tally.sent)
            try:
                scores, failure = await self._try(split.spec, piece, 1, piece_tally)
                if failure is not None:
                    scores, descended = await self._failed_piece(
                        split, piece, scores, failure, piece_tally
                    )
            except Stopped:
                if not paid:
                    raise
                # The run is stopping: what was answered is kept, the rest asked again.
                scores = [Score.failed(ErrorType.TRANSIENT_ERROR, _NOT_SENT)] * len(piece)
            paid = True
            found += scores
        return found

    async def _failed_piece(
        self,
        split: _Split,
        piece: Sequence[Revision],
        scores: list[Score],
        failure: _Retry,
        tally: _Tally,
    ) -> tuple[list[Score], bool]:
        """A piece's scores after its one attempt failed, and whether a probe went down
        into it."""
        status = failure.status or 0
        if status == 500 and len(piece) > 1:
            if self.splits.answered_since(split.pair, split.since):
                return await self._split(split, piece, tally), False
            if split.probing:
                return await self._split(split, piece, tally), True
        self.failing.failed(split.pair, status, failure.detail or "")
        if len(piece) == 1 and status >= 500:
            message = (
                f"HTTP {status} when sent alone, after its batch of {split.size} failed: "
                f"{failure.detail or ''}"
            )[:MAX_MESSAGE]
            return [replace(scores[0], error_message=message)], False
        return scores, False

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
        if spec.name in self.undeployed:
            return _undeployed(spec, rev_ids)
        pair: Pair = (spec.name, wiki)
        message = self.unsupported.get(pair)
        if message is not None:
            said = message or f"{spec.name} answered that it does not serve {wiki}"
            return {r: Score.failed(ErrorType.UNSUPPORTED_WIKI, said) for r in rev_ids}
        given_up = None if revisit else self.failing.refusal(pair)
        if given_up is not None:
            return dict.fromkeys(rev_ids, given_up)
        return None

    def _held_back(
        self, spec: ModelSpec, rev_ids: list[int], wiki: str, revisit: bool
    ) -> dict[int, Score] | None:
        """The answer for a job that must not be sent, or None if it may go."""
        if (refused := self._refused(spec, rev_ids, wiki, revisit=revisit)) is not None:
            return refused
        if self.stopping:
            raise Stopped
        return None

    async def _attempt(
        self,
        spec: ModelSpec,
        rev_ids: list[int],
        payload: bytes,
        wiki: str,
        tally: _Tally,
        revisit: bool,
    ) -> dict[int, Score] | _Retry:
        """One try: the scores, or what went wrong if it may be tried again."""
        if (refused := self._held_back(spec, rev_ids, wiki, revisit)) is not None:
            return refused
        await self._limiter.acquire()
        # A 404 for this model, a refusal of this wiki, a stop or giving up on the
        # endpoint may have come while this job waited for the budget: then nothing leaves.
        if (refused := self._held_back(spec, rev_ids, wiki, revisit)) is not None:
            return refused
        stats = self._stats
        stats.requests_sent += 1
        tally.sent += 1
        self.in_flight += 1
        if self.in_flight > stats.peak_in_flight:
            stats.peak_in_flight = self.in_flight
            if self._limit is not None:
                stats.limit_at_peak = self._limit()
        generation = self._refresher.generation if self._refresher is not None else 0
        try:
            reply = await self._client.post(spec, payload)
        except TransportFailure as exc:
            tally.seconds = exc.elapsed
            if self._on_latency is not None:
                self._on_latency(exc.elapsed)
            stats.requests_by_outcome[exc.kind] += 1
            self._check_reachable(exc)
            return _Retry(ErrorType.TRANSIENT_ERROR, str(exc))
        finally:
            self.in_flight -= 1
            if self.stopping and not self.in_flight:
                self._drained.set()
        self.answered = True
        tally.seconds = reply.latency
        status = reply.status
        refresher = self._refresher
        if refresher is not None and status != 401:
            refresher.accepted(generation)
        stats.requests_by_outcome[str(status)] += 1
        stats.record_latency(spec.column, reply.latency)
        if self._on_latency is not None:
            self._on_latency(reply.latency)
        pair = (spec.name, wiki)
        if 200 <= status < 300:
            self.failing.answered(pair)
            self.splits.final(pair)
            return parse_answer(spec, rev_ids, reply.body)
        if status == 429:
            self._limiter.pause(
                parse_retry_after(reply.retry_after, default=self._policy.default_retry_after)
            )
            return _RATE_LIMITED
        if status == 401 and refresher is not None and refresher.may_refresh(generation):
            token = await refresher.refresh(generation)
            if token is not None:
                self._client.set_token(token)
                log.info(
                    "401: the token expired or was revoked; a new one came from %s "
                    "(a tier change takes effect only with a newly issued token)",
                    refresher.credentials.token_url,
                )
            return _REFRESHED
        if status == 401:
            raise AuthenticationError(
                url=self._client.endpoint.url(spec.name),
                token_sent=self._client.has_token,
                refreshed=refresher is not None and refresher.generation > 0,
                bearer_challenge=is_bearer_challenge(reply.www_authenticate),
            )
        if status == 404:
            self.undeployed.add(spec.name)
            return _undeployed(spec, rev_ids)
        text = error_text(reply.body)
        if status < 400:  # 1xx/3xx: nothing a model server should answer
            failed = Score.failed(ErrorType.BAD_RESPONSE, f"HTTP {status}: {text[:MAX_MESSAGE]}")
            return dict.fromkeys(rev_ids, failed)
        if status == 422 and (each := all_failed(text)) is not None and set(each) >= set(rev_ids):
            self.splits.final(pair)
            return each
        final = read_error(status, text, rev_ids)
        if final is not None:
            self.splits.final(pair)
            return dict.fromkeys(rev_ids, final)
        return self._retry(reply, text)

    def _retry(self, reply: Reply, text: str) -> _Retry:
        """An answer worth another try (the limiter paused if a 503 said how long)."""
        cause = f"HTTP {reply.status}"
        if reply.status == 503 and (seconds := read_retry_after(reply.retry_after)) is not None:
            self._limiter.pause(seconds)
            return _Retry(ErrorType.TRANSIENT_ERROR, cause, text, paused=True, status=503)
        return _Retry(ErrorType.TRANSIENT_ERROR, cause, text, status=reply.status)


def _undeployed(spec: ModelSpec, rev_ids: list[int]) -> dict[int, Score]:
    message = f"{spec.name} answered 404: the model is not deployed (check the wiki and model name)"
    return {rev_id: Score.failed(ErrorType.MODEL_NOT_DEPLOYED, message) for rev_id in rev_ids}
