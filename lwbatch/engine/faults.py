"""Server-side faults of one (model, wiki): the safety net for what no list foresees.

A model server that fails every revision of a wiki the same way (articlequality's
500 ``KeyError : 'ann'`` for a wiki missing from its feature table) would otherwise cost
every revision its full retries. When `after` distinct revisions of one (model, wiki)
have each used up their retries on a 500 with the same body, and that (model, wiki)
answered nothing with a 2xx in between, the rest of it is not sent this run.

A real outage is told apart by its spread: a body also seen failing for another
(model, wiki) is an outage of something they share (MediaWiki, the cluster), and is
retried as ever. 502/503/504 come from the gateway and never count, nor does the body of
revertrisk's batch fetch failure, which splitting a batch handles.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from lwbatch.protocol.failures import is_fetch_failure
from lwbatch.results import ErrorType, Score

Pair = tuple[str, str]  # (model, wiki database name)

# Bodies remembered to tell an outage (one body on several pairs) from a fault of one.
_BODIES = 256


class _Streak:
    __slots__ = ("body", "revisions")

    def __init__(self, body: str) -> None:
        self.body = body
        self.revisions: set[int] = set()


class ServerFaults:
    """Per (model, wiki): 2xx answers seen, the current streak of one failing body, the
    pairs given up on, and the batch splits still allowed."""

    def __init__(self, *, after: int, max_splits: int) -> None:
        self.after = after
        self._max_splits = max_splits
        self._answered: set[Pair] = set()
        self._streaks: dict[Pair, _Streak] = {}
        self._given_up: dict[Pair, str] = {}
        self._splits: dict[Pair, int] = {}
        self._bodies: OrderedDict[str, set[Pair]] = OrderedDict()

    def answered(self, pair: Pair) -> None:
        """A 2xx for this (model, wiki): it works, whatever failed before."""
        self._answered.add(pair)
        self._streaks.pop(pair, None)

    def has_answered(self, pair: Pair) -> bool:
        return pair in self._answered

    def may_split(self, pair: Pair) -> bool:
        """Whether a failed batch of `pair` may be split: only while other batches of it
        succeed (not in an outage), and at most `max_splits` batches per pair."""
        if pair not in self._answered:
            return False
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


__all__ = ["Pair", "ServerFaults"]
