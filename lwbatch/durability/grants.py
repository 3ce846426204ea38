"""The grant times a journal keeps: when this output's requests left, so that a restarted
run still sends at most N in any window. One owner for their sign, their clock and
their merge with the budget shared between processes.

The journal keeps wall-clock times (``ledger.f64``): a grant as its time, or as minus
its time when the shared budget's file holds it too. On resume, a run that shares
counts again only the grants the shared file lacks (a run that kept its budget to
itself, or one before that file was replaced) and records them as held, so that a later
resume does not add them twice; a run that does not share counts them all. The limiter
gets them on the process' own clock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol


class GrantRecords(Protocol):
    """Where grant times go (a Journal, or the calls of a running job to it)."""

    def record_grant(self, wall_time: float) -> None: ...


class GrantTimes:
    """Grants of one output's journal, recorded and restored."""

    def __init__(
        self,
        journal: GrantRecords,
        *,
        shared: bool,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._journal = journal
        self._shared = shared
        self._clock = clock
        self._wall = wall

    def record(self, _now: float) -> None:
        """A request left (a limiter's grant watcher: `_now` is its clock time)."""
        now = self._wall()
        self._journal.record_grant(-now if self._shared else now)

    def to_restore(self, kept: Sequence[float]) -> list[float]:
        """The grants of earlier runs of this output to count again, oldest first, on
        this process' clock."""
        held = Counter(-t for t in kept if t < 0)
        lacking = []
        for t in kept:
            if t > 0:
                if held[t]:
                    held[t] -= 1
                else:
                    lacking.append(t)
        if self._shared:
            for t in lacking:
                self._journal.record_grant(-t)
            wall_times = lacking
        else:
            wall_times = sorted([*(t for t in kept if t > 0), *held.elements()])
        offset = self._clock() - self._wall()
        return [t + offset for t in wall_times]


__all__ = ["GrantRecords", "GrantTimes"]
