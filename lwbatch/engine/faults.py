"""Faults of the model servers themselves, per (model, wiki): what a model refused for
good, when to give up on one that keeps failing, and when a failed batch may be split to
find the revision that fails it.

Refusals (:class:`Refusals`): a model that answered 404 is not deployed, and a (model,
wiki) whose server said it does not serve that wiki never will in this run: neither is
asked again, and a rerun learns them from the journal.

Giving up (:class:`FailingWikis`): a model server that fails every revision of a wiki
the same way (articlequality's 500 ``KeyError : 'ann'`` for a wiki missing from its
feature table) would otherwise cost every revision its full retries. When `after`
requests of one (model, wiki) have each used up their retries on a 500 with the same
body, and that (model, wiki) has answered no 2xx in the run, it is given up on: its
jobs are answered ``server_error`` without a request, and every `REVISIT` seconds one
job is let through to see whether it recovered. Told apart from a real outage, which is
retried as ever: a pair that answered a 2xx earlier in the run is never given up (its
server worked: a failure now is an outage), nor is one whose body is also failing
another (model, wiki) (an outage of what they share: MediaWiki, the cluster). The
gateway's 502/503/504 never count, nor does revertrisk's batch fetch failure, which
splitting handles.

Splitting (:class:`BatchSplits`): revertrisk answers 500 for a whole batch when fetching
any one of its revisions raises. A batch that used up its retries on a 500 is split in
halves while its (model, wiki) gives final answers to other requests (since the batch's
first attempt). Otherwise it may be an outage, and the first such batch probes: its
halves are tried, and while none is answered the first failing half is split again,
down to one revision; the other failed batches of that (model, wiki) wait for the
verdict. A probe that finds no answer is an outage: nothing of it is split for
`PROBE_AGAIN` seconds.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio

from lwbatch.protocol.failures import MAX_MESSAGE, is_fetch_failure
from lwbatch.results import ErrorType, Score

Pair = tuple[str, str]  # (model, wiki database name)

# Bodies remembered to tell an outage (one body on several pairs) from a fault of one.
_BODIES = 256
# Seconds after which a (model, wiki) given up on is tried again with one job.
REVISIT = 60.0
# After a probe found an outage, seconds before another failed batch may probe again.
PROBE_AGAIN = 60.0


class _GivenUp:
    __slots__ = ("message", "until")

    def __init__(self, message: str, until: float) -> None:
        self.message = message
        self.until = until  # when one job may go again


class Refusals:
    """What models refused for good in this run: the one owner of those facts."""

    def __init__(self) -> None:
        self._undeployed: set[str] = set()
        # (model, wiki) -> what its server said ("" when only a journal remembers it)
        self._unsupported: dict[tuple[str, str], str] = {}

    def not_deployed(self, model: str) -> None:
        self._undeployed.add(model)

    def wiki_unsupported(self, pair: tuple[str, str], said: str = "") -> None:
        self._unsupported.setdefault(pair, said)

    def all_undeployed(self, models: set[str]) -> bool:
        """Whether every one of `models` (none is not enough) answered 404."""
        return bool(models) and models <= self._undeployed

    def answer(self, model: str, wiki: str, rev_ids: list[int]) -> dict[int, Score] | None:
        """The answers, without a request, for revisions the model refused, else None."""
        if model in self._undeployed:
            return undeployed(model, rev_ids)
        said = self._unsupported.get((model, wiki))
        if said is None:
            return None
        said = said or f"{model} answered that it does not serve {wiki}"
        return {r: Score.failed(ErrorType.UNSUPPORTED_WIKI, said) for r in rev_ids}


def undeployed(model: str, rev_ids: list[int]) -> dict[int, Score]:
    message = f"{model} answered 404: the model is not deployed (check the wiki and model name)"
    return {rev_id: Score.failed(ErrorType.MODEL_NOT_DEPLOYED, message) for rev_id in rev_ids}


class FailingWikis:
    """Per (model, wiki): whether it answered a 2xx, its current streak of one failing
    body, and whether it is given up on."""

    def __init__(self, *, after: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.after = after
        self._clock = clock
        self._answered: set[Pair] = set()
        self._streaks: dict[Pair, tuple[str, int]] = {}  # body, requests failed with it
        self._given_up: dict[Pair, _GivenUp] = {}
        self._bodies: OrderedDict[str, set[Pair]] = OrderedDict()

    def answered(self, pair: Pair) -> None:
        """A 2xx for this (model, wiki): it works."""
        self._answered.add(pair)
        self._streaks.pop(pair, None)
        self._given_up.pop(pair, None)

    def failed(self, pair: Pair, status: int, body: str) -> None:
        """One request of `pair` used up its retries on `status` with `body`."""
        if pair in self._given_up:
            return  # a revisit that failed: the next one is due REVISIT after it left
        if status != 500 or is_fetch_failure(body) or pair in self._answered:
            return
        body = body[:MAX_MESSAGE]
        spread = self._bodies.get(body)
        if spread is None:
            spread = self._bodies[body] = set()
            if len(self._bodies) > _BODIES:
                self._bodies.popitem(last=False)
        else:
            self._bodies.move_to_end(body)
        spread.add(pair)
        if len(spread) > 1:
            return  # an outage of something pairs share
        said, count = self._streaks.get(pair, (body, 0))
        count = count + 1 if said == body else 1
        self._streaks[pair] = (body, count)
        if count >= self.after:
            model, wiki = pair
            del self._streaks[pair]
            self._given_up[pair] = _GivenUp(
                f"{model} answered 500 {body[:200]!r} to {count} requests for {wiki} in a "
                f"row, and nothing for {wiki} in this run: not sent (asked again by a rerun)",
                self._clock() + REVISIT,
            )

    def refusal(self, pair: Pair) -> Score | None:
        """The answer for a job of a pair given up on, or None if it is not."""
        given_up = self._given_up.get(pair)
        if given_up is None:
            return None
        return Score.failed(ErrorType.SERVER_ERROR, given_up.message, cacheable=False)

    def due(self, pair: Pair) -> bool:
        """Whether a pair given up on may be tried again with one job."""
        given_up = self._given_up.get(pair)
        return given_up is not None and self._clock() >= given_up.until

    def revisit(self, pair: Pair) -> bool:
        """Take the one job that tries a pair given up on again, if it is due; the next
        is due REVISIT seconds later, whatever this one meets."""
        if not self.due(pair):
            return False
        self._given_up[pair].until = self._clock() + REVISIT
        return True


class BatchSplits:
    """When a batch that used up its retries on a 500 may be split."""

    def __init__(self, *, max_splits: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_splits = max_splits
        self._clock = clock
        self._final: dict[Pair, float] = {}  # when the pair last gave a final answer
        self._probing: dict[Pair, anyio.Event] = {}
        self._outage_until: dict[Pair, float] = {}
        self._splits: dict[Pair, int] = {}

    def now(self) -> float:
        return self._clock()

    def final(self, pair: Pair) -> None:
        """The pair gave a final answer (a score, or an answer about the revisions)."""
        self._final[pair] = self._clock()
        self._outage_until.pop(pair, None)

    def answered_since(self, pair: Pair, since: float) -> bool:
        return self._final.get(pair, -math.inf) >= since

    async def may_split(self, pair: Pair, since: float) -> bool | None:
        """Whether a batch of `pair` whose first attempt was at `since` may be split:
        True, False, or None to split it as the probe (then call :meth:`probed` once it
        is done). Waits while another batch of `pair` probes."""
        while not self.answered_since(pair, since):
            probe = self._probing.get(pair)
            if probe is None:
                if self._clock() < self._outage_until.get(pair, -math.inf):
                    return False
                if not self._take(pair):
                    return False
                self._probing[pair] = anyio.Event()
                return None
            await probe.wait()
        return self._take(pair)

    def probed(self, pair: Pair, since: float) -> None:
        """The probe is over; if the pair answered nothing since `since`, an outage."""
        if not self.answered_since(pair, since):
            self._outage_until[pair] = self._clock() + PROBE_AGAIN
        self._probing.pop(pair).set()

    def _take(self, pair: Pair) -> bool:
        # The cap counts batches; the halvings of one batch are bounded by its size.
        used = self._splits.get(pair, 0)
        if used >= self._max_splits:
            return False
        self._splits[pair] = used + 1
        return True


__all__ = [
    "PROBE_AGAIN",
    "REVISIT",
    "BatchSplits",
    "FailingWikis",
    "Pair",
    "Refusals",
    "undeployed",
]
