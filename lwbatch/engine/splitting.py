"""A batch that used up its retries on a 500, split to find the revision that fails it.

revertrisk's batch server answers 500 for a whole request when fetching any one of its
revisions raises. Such a batch is split in halves, one attempt per piece (it has had
its retries), down to the revision that fails it, while its (model, wiki) answers other
requests; otherwise the first such batch probes (lwbatch/engine/faults.py). What a
piece that still fails says counts towards giving up on its (model, wiki).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol

from lwbatch.engine.faults import BatchSplits, FailingWikis, Pair
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.protocol.failures import MAX_MESSAGE
from lwbatch.results import ErrorType, Revision, Score

NOT_SENT = "not sent: the run stopped while its batch was being split"


class Failure(Protocol):
    """What an attempt that got no usable answer says (the dispatcher's)."""

    @property
    def status(self) -> int | None: ...

    @property
    def detail(self) -> str | None: ...


# One attempt of a piece, after `base` requests its revisions were in: its scores, and
# its failure if it failed; raises `stopped` when the run stops before it is sent.
TryOnce = Callable[[Sequence[Revision], int], Awaitable[tuple[list[Score], Failure | None]]]


class Split:
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


class Splitter:
    """Splits the failed batches of one dispatcher."""

    def __init__(
        self, failing: FailingWikis, splits: BatchSplits, stopped: type[Exception]
    ) -> None:
        self.failing = failing
        self.splits = splits
        self._stopped = stopped

    async def after_retries(
        self,
        spec: ModelSpec,
        revisions: Sequence[Revision],
        scores: list[Score],
        failure: Failure,
        since: float,
        try_once: TryOnce,
        sent: int,
    ) -> list[Score]:
        """A job whose retries were used up (the first attempt at `since`): split a batch
        to find the revision that fails it, else count it towards giving up on its
        (model, wiki). `sent`: the requests the job took."""
        pair = (spec.name, revisions[0].wiki.dbname)
        status = failure.status or 0
        if status == 500 and len(revisions) > 1:
            allowed = await self.splits.may_split(pair, since)
            if allowed is not False:
                split = Split(spec, pair, since, scores[0], len(revisions), probing=not allowed)
                try:
                    return await self._split(split, revisions, try_once, sent)
                finally:
                    if split.probing:
                        self.splits.probed(pair, since)
        self.failing.failed(pair, status, failure.detail or "")
        return scores

    async def _split(
        self, split: Split, revisions: Sequence[Revision], try_once: TryOnce, sent: int
    ) -> list[Score]:
        """Halves, one attempt each. A failing half is split again while the (model, wiki)
        answers others. A probe goes down the first failing half alone; where that met
        no answer at all (an outage), the other half is not sent and keeps the batch's
        failure."""
        half = len(revisions) // 2
        found: list[Score] = []
        paid = descended = False
        for piece in (revisions[:half], revisions[half:]):
            if descended and not self.splits.answered_since(split.pair, split.since):
                found += [split.failed] * len(piece)
                continue
            try:
                scores, failure = await try_once(piece, sent)
                if failure is not None:
                    scores, descended = await self._failed_piece(
                        split, piece, scores, failure, try_once, sent + 1
                    )
            except self._stopped:
                if not paid:
                    raise
                # The run is stopping: what was answered is kept, the rest asked again.
                scores = [Score.failed(ErrorType.TRANSIENT_ERROR, NOT_SENT)] * len(piece)
            paid = True
            found += scores
        return found

    async def _failed_piece(
        self,
        split: Split,
        piece: Sequence[Revision],
        scores: list[Score],
        failure: Failure,
        try_once: TryOnce,
        sent: int,
    ) -> tuple[list[Score], bool]:
        """A piece's scores after its one attempt failed (`sent` requests in all), and
        whether a probe went down into it."""
        status = failure.status or 0
        if status == 500 and len(piece) > 1:
            if self.splits.answered_since(split.pair, split.since):
                return await self._split(split, piece, try_once, sent), False
            if split.probing:
                return await self._split(split, piece, try_once, sent), True
        self.failing.failed(split.pair, status, failure.detail or "")
        if len(piece) == 1 and status >= 500:
            message = (
                f"HTTP {status} when sent alone, after its batch of {split.size} failed: "
                f"{failure.detail or ''}"
            )[:MAX_MESSAGE]
            return [replace(scores[0], error_message=message)], False
        return scores, False


__all__ = ["NOT_SENT", "Split", "Splitter"]
