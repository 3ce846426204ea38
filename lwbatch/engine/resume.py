"""What an earlier, interrupted run finished: the engine's only view of a journal."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyroaring import BitMap64

from lwbatch.keys import KeySet, RowKey
from lwbatch.results import Score


@dataclass(slots=True)
class ResumeState:
    """What an earlier, interrupted run left: enough to skip everything it did."""

    done: KeySet = field(default_factory=KeySet)  # keys whose row is in a segment
    partial: dict[RowKey, dict[str, Score]] = field(default_factory=dict)  # unfinished rows
    invalid_rows: BitMap64 = field(default_factory=BitMap64)  # input rows already written
    undeployed: set[str] = field(default_factory=set)
    ledger: list[float] = field(default_factory=list)  # wall-clock grant times
    rows_done: int = 0  # rows in segments (valid and invalid)
    retried: int = 0  # answers dropped to be asked again (transient failures)

    @property
    def resumed(self) -> bool:
        return bool(self.rows_done or self.partial)
