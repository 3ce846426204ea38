"""The one decision every input item goes through, for `score` and for `plan` alike.

An item is an invalid row (never sent), a duplicate of a key seen earlier, a key an
earlier run of this output finished, or a new revision. A new revision then goes, per
output column, to an answer that needs no request (an earlier run's, a refusal of the
model for that wiki or row, the cache's, or what the model already answered for that
whole (model, wiki)) or to the model it is sent to, alone or in a batch. `score`'s
producer and `plan` both ask here, so that plan counts what score sends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from lwbatch.engine.resume import ResumeState
from lwbatch.engine.stats import RunStats
from lwbatch.engine.targets import Targets
from lwbatch.keys import KeySet, RowKey
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import InvalidRow, Revision, Score
from lwbatch.seams import Item, ScoreCache
from lwbatch.wikis import Wiki


class Kind(Enum):
    INVALID = "invalid"  # to write as an invalid row
    INVALID_DONE = "invalid done"  # an invalid row an earlier run wrote
    DUPLICATE = "duplicate"  # a key seen earlier in the input
    DONE = "done"  # a key an earlier run finished
    NEW = "new"  # a revision to score


Origin = Literal["earlier", "refused", "cached", "held"]


@dataclass(frozen=True, slots=True)
class Answered:
    """A column's answer that needs no request, and where it came from: an earlier
    run's (`earlier`), a refusal before any request (`refused`: the model cannot score
    the row's wiki, or the row lacks what it needs), the cache's (`cached`), or what
    the model answered for its whole (model, wiki) already (`held`)."""

    score: Score
    origin: Origin
    target: str | None = None  # the model the answer is of, where one was chosen


# What a column of a new revision needs: an answer, or the model to send it to.
Decision = Answered | ModelSpec
HeldBack = Callable[[ModelSpec, Sequence[Revision]], list[Score] | None]


class Router:
    """Sorts input items and decides, per column, what each new revision needs."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        default_wiki: Wiki,
        *,
        cache: ScoreCache | None = None,
        resume: ResumeState | None = None,
        held_back: HeldBack | None = None,
    ) -> None:
        self.specs = list(specs)
        self.targets = Targets(self.specs, default_wiki)
        self._cache = cache
        self._resume = resume if resume is not None else ResumeState()
        self._held_back = held_back
        self._seen = KeySet()

    def sort(self, item: Item, stats: RunStats) -> Kind:
        """What `item` is, counted in `stats` (rows read, invalid, duplicate, distinct,
        resumed)."""
        stats.rows_read += 1
        if isinstance(item, InvalidRow):
            stats.invalid_rows += 1
            if not stats.first_invalid:
                stats.first_invalid = str(item)
            if item.row is not None and item.row in self._resume.invalid_rows:
                stats.rows_resumed += 1
                stats.invalid_resumed += 1
                return Kind.INVALID_DONE
            return Kind.INVALID
        key = item.key
        if key in self._seen:
            stats.duplicate_rows += 1
            return Kind.DUPLICATE
        self._seen.add(key)
        stats.distinct_revisions += 1
        done = self._resume.done
        if done and key in done:
            stats.rows_resumed += 1
            return Kind.DONE
        return Kind.NEW

    def decide(
        self, revision: Revision, key: RowKey | None = None
    ) -> list[tuple[ModelSpec, Decision]]:
        """Per column (its spec), what a new revision needs, in the columns' order
        (`key`: the revision's, when the caller has it already)."""
        partial = self._resume.partial
        earlier = partial.get(key or revision.key) if partial else None
        cache, held_back, targets = self._cache, self._held_back, self.targets
        decided: list[tuple[ModelSpec, Decision]] = []
        for spec in self.specs:
            if earlier and spec.name in earlier:
                decided.append((spec, Answered(earlier[spec.name], "earlier")))
                continue
            target = targets.of(spec, revision)
            if isinstance(target, Score):
                decided.append((spec, Answered(target, "refused")))
                continue
            if cache is not None:
                kept = cache.get(target.name, revision.wiki.dbname, revision.rev_id)
                if kept is not None:
                    decided.append((spec, Answered(kept, "cached", target.name)))
                    continue
            held = held_back(target, [revision]) if held_back is not None else None
            if held is not None:
                decided.append((spec, Answered(held[0], "held", target.name)))
                continue
            decided.append((spec, target))
        return decided


__all__ = ["Answered", "Decision", "Kind", "Router"]
