"""Server-side faults of one (model, wiki): the safety net for what no list foresees,
and when a failed batch may be split to find the revision that fails it.

A model server that fails every revision of a wiki the same way (articlequality's
500 ``KeyError : 'ann'`` for a wiki missing from its feature table) would otherwise cost
every revision its full retries. When `after` distinct revisions of one (model, wiki)
have each used up their retries on a 500 with the same body, and that (model, wiki)
answered nothing with a 2xx in between, the rest of it is not sent this run.

A real outage is told apart by its spread: a body also seen failing for another
(model, wiki) is an outage of something they share (MediaWiki, the cluster), and is
retried as ever. 502/503/504 come from the gateway and never count, nor does the body of
revertrisk's batch fetch failure, which splitting a batch handles.

Splitting: revertrisk answers 500 for a whole batch when fetching any one of its
revisions raises. A failed batch is split while its (model, wiki) answers other
requests. Before anything of it was answered, the first failed batch probes: it is split
once (two requests), and the other failed batches wait for what that shows. If neither
half is answered it is an outage: nothing of that (model, wiki) is split for
`PROBE_AGAIN` seconds, unless an answer comes first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import anyio

from lwbatch.protocol.failures import is_fetch_failure
from lwbatch.results import ErrorType, Score

Pair = tuple[str, str]  # (model, wiki database name)

# Bodies remembered to tell an outage (one body on several pairs) from a fault of one.
_BODIES = 256
# After a probe found an outage, seconds before another failed batch may probe again.
PROBE_AGAIN = 60.0


class _Streak:
    __slots__ = ("body", "revisions")

    def __init__(self, body: str) -> None:
        self.body = body
        self.revisions: set[int] = set()


class ServerFaults:
    """Per (model, wiki): 2xx answers seen, the current streak of one failing body, the
    pairs given up on, and the batch splits still allowed."""

    def __init__(
        self, *, after: int, max_splits: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.after = after
        self._max_splits = max_splits
        self._clock = clock
        self._answered: set[Pair] = set()
        self._probing: dict[Pair, anyio.Event] = {}
        self._outage_until: dict[Pair, float] = {}
        self._streaks: dict[Pair, _Streak] = {}
        self._given_up: dict[Pair, str] = {}
        self._splits: dict[Pair, int] = {}
        self._bodies: OrderedDict[str, set[Pair]] = OrderedDict()

    def answered(self, pair: Pair) -> None:
        """A 2xx for this (model, wiki): it works, whatever failed before."""
        self._answered.add(pair)
        self._streaks.pop(pair, None)

    async def may_split(self, pair: Pair) -> bool | None:
        """Whether a batch of `pair` that used up its retries may be split: True, False,
        or None to split it as the probe (then call :meth:`probed` once its halves are
        tried). Waits while another batch of `pair` probes."""
        while pair not in self._answered:
            probe = self._probing.get(pair)
            if probe is None:
                if self._clock() < self._outage_until.get(pair, 0.0):
                    return False
                if not self._take_split(pair):
                    return False
                self._probing[pair] = anyio.Event()
                return None
            await probe.wait()
        return self._take_split(pair)

    def may_split_again(self, pair: Pair) -> bool:
        """Whether a failed piece of a split batch may be split further: only once the
        pair has answered something (else its failures are an outage's)."""
        return pair in self._answered and self._take_split(pair)

    def probed(self, pair: Pair) -> None:
        """The probe's halves were tried; unanswered, they show an outage."""
        if pair not in self._answered:
            self._outage_until[pair] = self._clock() + PROBE_AGAIN
        self._probing.pop(pair).set()

    def _take_split(self, pair: Pair) -> bool:
        used = self._splits.get(pair, 0)
        if used >= self._max_splits:
            return False
        self._splits[pair] = used + 1
        return True

    def failed(self, pair: Pair, status: int, body: str, revisions: Iterable[int]) -> None:
        """Revisions of `pair` used up their retries on `status` with `body`."""
        if status != 500 or is_fetch_failure(body) or pair in self._given_up:
            return
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
        streak = self._streaks.get(pair)
        if streak is None or streak.body != body:
            streak = self._streaks[pair] = _Streak(body)
        streak.revisions.update(revisions)
        if len(streak.revisions) >= self.after:
            model, wiki = pair
            self._given_up[pair] = (
                f"{model} answered 500 {body[:200]!r} for {len(streak.revisions)} "
                f"{wiki} revisions in a row and scored none in between: the rest of "
                f"{wiki} is not sent this run (a rerun asks again)"
            )
            del self._streaks[pair]

    def given_up(self, pair: Pair) -> Score | None:
        """The answer for a revision of a pair given up on, or None."""
        message = self._given_up.get(pair)
        if message is None:
            return None
        return Score.failed(ErrorType.SERVER_ERROR, message, cacheable=False)


__all__ = ["PROBE_AGAIN", "Pair", "ServerFaults"]
