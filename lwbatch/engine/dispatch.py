"""One request's life: budget, send, retry, and the answer turned into scores.

Every attempt, retries included, passes through the limiter first. Transient
failures (5xx, timeouts, resets) back off exponentially with full jitter (tenacity);
a 429 pauses the whole limiter for Retry-After, so every worker waits, not just the
one that was told. Terminal answers become scores; only 401 ends the run.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from lwbatch.config import RetryPolicy
from lwbatch.engine.stats import RunStats
from lwbatch.errors import AuthenticationError, UnreachableError
from lwbatch.protocol.answers import classify_client_error, error_message, parse_answer
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.protocol.client import LiftWingClient, TransportFailure
from lwbatch.results import ErrorType, Revision, Score
from lwbatch.seams import Limiter

_MAX_RETRY_AFTER = 3600.0


def build_payload(spec: ModelSpec, revisions: Sequence[Revision]) -> bytes:
    """The JSON body: one instance, or ``{"instances": [...]}`` for a batch."""
    with_lang = spec.needs_lang
    instances = [
        {"rev_id": r.rev_id, "lang": r.lang} if with_lang else {"rev_id": r.rev_id}
        for r in revisions
    ]
    if len(instances) == 1:
        return orjson.dumps(instances[0])
    return orjson.dumps({"instances": instances})


def parse_retry_after(value: str | None, *, default: float) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return default
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


class Stopped(Exception):
    """The run is stopping: this job was not sent and stays unanswered."""


class _Retryable(Exception):
    def __init__(self, error: ErrorType, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


class _RateLimited(_Retryable):
    pass


@dataclass(slots=True)
class _Tries:
    transient: int = 0
    rate_limited: int = 0


class Dispatcher:
    """Sends one job (a model and its revisions) and returns a score per revision."""

    def __init__(
        self,
        client: LiftWingClient,
        limiter: Limiter,
        stats: RunStats,
        *,
        retry: RetryPolicy,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_latency: Callable[[float], None] | None = None,
        limit: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        # The in-flight cap in force, read when a new peak is reached (for the report).
        self._limit = limit
        self._on_latency = on_latency
        self._limiter = limiter
        self._stats = stats
        self._policy = retry
        self._sleep = sleep
        self._backoff = wait_random_exponential(
            multiplier=retry.backoff_base, max=retry.backoff_max
        )
        self.undeployed: set[str] = set()
        self.stopping = False
        self.in_flight = 0
        self.answered = False  # any HTTP answer at all, whatever its status
        self._unreachable = 0  # connection failures in a row before any answer
        self._unreachable_reason = ""
        self._drained = asyncio.Event()

    def stop(self) -> None:
        """Send nothing more; requests already in flight may finish."""
        self.stopping = True
        if not self.in_flight:
            self._drained.set()

    async def drained(self) -> None:
        """Wait until no request is in flight (after :meth:`stop`)."""
        await self._drained.wait()

    async def send(self, spec: ModelSpec, revisions: Sequence[Revision]) -> dict[int, Score]:
        rev_ids = [r.rev_id for r in revisions]
        payload = build_payload(spec, revisions)
        tries = _Tries()
        # Most requests succeed at once: they skip tenacity, whose retry state is a
        # reference cycle per request that only a full GC frees (measured: 20-100 ms
        # pauses, each a burst of send jitter a server-side window can see).
        try:
            return await self._attempt(spec, rev_ids, payload, tries)
        except _Retryable as exc:
            first: _Retryable | None = exc
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            stop=lambda _state: self._exhausted(tries),
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if first is not None:
                        # Replayed so tenacity counts and backs off from attempt 1.
                        failure, first = first, None
                        raise failure
                    return await self._attempt(spec, rev_ids, payload, tries)
        except _Retryable as exc:
            return {rev_id: Score.failed(exc.error, exc.message) for rev_id in rev_ids}
        raise AssertionError("unreachable: tenacity either returns or re-raises")

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

    def _held_back(self, spec: ModelSpec, rev_ids: list[int]) -> dict[int, Score] | None:
        """The answer for a job that must not be sent, or None if it may go."""
        if spec.name in self.undeployed:
            return _undeployed(spec, rev_ids)
        if self.stopping:
            raise Stopped
        return None

    def _exhausted(self, tries: _Tries) -> bool:
        return (
            tries.transient >= self._policy.max_attempts
            or tries.rate_limited >= self._policy.max_rate_limited
        )

    def _wait(self, state: RetryCallState) -> float:
        # After a 429 the limiter itself holds every worker until Retry-After.
        failure = state.outcome.exception() if state.outcome else None
        return 0.0 if isinstance(failure, _RateLimited) else self._backoff(state)

    async def _attempt(
        self, spec: ModelSpec, rev_ids: list[int], payload: bytes, tries: _Tries
    ) -> dict[int, Score]:
        if (undeployed := self._held_back(spec, rev_ids)) is not None:
            return undeployed
        await self._limiter.acquire()
        # A 404 for this model, a stop or giving up on the endpoint may have come while
        # this job waited for the budget: then nothing leaves.
        if (undeployed := self._held_back(spec, rev_ids)) is not None:
            return undeployed
        stats = self._stats
        stats.requests_sent += 1
        self.in_flight += 1
        if self.in_flight > stats.peak_in_flight:
            stats.peak_in_flight = self.in_flight
            if self._limit is not None:
                stats.limit_at_peak = self._limit()
        try:
            reply = await self._client.post(spec, payload)
        except TransportFailure as exc:
            if self._on_latency is not None:
                self._on_latency(exc.elapsed)
            stats.requests_by_outcome[exc.kind] += 1
            self._check_reachable(exc)
            tries.transient += 1
            raise _Retryable(
                ErrorType.TRANSIENT_ERROR, f"{exc} after {tries.transient} attempt(s)"
            ) from None
        finally:
            self.in_flight -= 1
            if self.stopping and not self.in_flight:
                self._drained.set()
        self.answered = True
        status = reply.status
        stats.requests_by_outcome[str(status)] += 1
        stats.record_latency(spec.name, reply.latency)
        if self._on_latency is not None:
            self._on_latency(reply.latency)
        if 200 <= status < 300:
            return parse_answer(spec, rev_ids, reply.body)
        if status == 429:
            tries.rate_limited += 1
            self._limiter.pause(
                parse_retry_after(reply.retry_after, default=self._policy.default_retry_after)
            )
            raise _RateLimited(
                ErrorType.RATE_LIMITED, f"HTTP 429 {tries.rate_limited} times in a row"
            )
        if status >= 500:
            tries.transient += 1
            raise _Retryable(
                ErrorType.TRANSIENT_ERROR,
                f"HTTP {status} after {tries.transient} attempt(s): {error_message(reply.body)}",
            )
        if status == 401:
            raise AuthenticationError(url=self._client.endpoint.url(spec.name))
        if status == 404:
            self.undeployed.add(spec.name)
            return _undeployed(spec, rev_ids)
        message = error_message(reply.body)
        if status < 400:  # 1xx/3xx: nothing a model server should answer
            return {
                r: Score.failed(ErrorType.BAD_RESPONSE, f"HTTP {status}: {message}")
                for r in rev_ids
            }
        error = classify_client_error(status, message)
        return {rev_id: Score.failed(error, message) for rev_id in rev_ids}


def _undeployed(spec: ModelSpec, rev_ids: list[int]) -> dict[int, Score]:
    message = f"{spec.name} answered 404: the model is not deployed (check the wiki and model name)"
    return {rev_id: Score.failed(ErrorType.MODEL_NOT_DEPLOYED, message) for rev_id in rev_ids}
