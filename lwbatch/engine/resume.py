"""What an earlier, interrupted run finished: the engine's only view of a journal."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyroaring import BitMap64

from lwbatch.keys import KeySet, RowKey
from lwbatch.results import ErrorType, Score

# Answers final for every revision of a (model, wiki), not just the one asked.
WIKI_WIDE = frozenset({ErrorType.MODEL_NOT_DEPLOYED, ErrorType.UNSUPPORTED_WIKI})
# Answers a rerun asks again (unless told not to): failures of the service, not answers
# about the revision.
RETRYABLE = frozenset(
    {
        ErrorType.TRANSIENT_ERROR.value,
        ErrorType.RATE_LIMITED.value,
        ErrorType.SERVER_ERROR.value,
    }
)


@dataclass(slots=True)
class ResumeState:
    """What an earlier, interrupted run left: enough to skip everything it did."""

    done: KeySet = field(default_factory=KeySet)  # keys whose row is in a segment
    partial: dict[RowKey, dict[str, Score]] = field(default_factory=dict)  # unfinished rows
    invalid_rows: BitMap64 = field(default_factory=BitMap64)  # input rows already written
    # (model, key wiki, error) of answers in WIKI_WIDE: a model not deployed for a wiki,
    # or not serving its language. The key wiki is "" when the input names no wiki.
    refused: set[tuple[str, str, ErrorType]] = field(default_factory=set)
    ledger: list[float] = field(default_factory=list)  # wall-clock grant times
    rows_done: int = 0  # rows in segments (valid and invalid)
    retried: int = 0  # answers dropped to be asked again (transient failures)

    @property
    def resumed(self) -> bool:
        return bool(self.rows_done or self.partial)
