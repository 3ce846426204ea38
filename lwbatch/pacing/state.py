"""Where a limiter keeps its state, behind one interface: in the process
(:class:`LocalState`), or in a file every lwbatch process of an identity maps
(:class:`~lwbatch.pacing.shared.SharedLedger`). The limiter asks the same questions of
both; the local answers are those of a limiter alone (no one else's turn, nothing to
lock).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Awaitable, Callable, MutableSequence, Sequence
from typing import TYPE_CHECKING, Protocol

from lwbatch.config import Budget

if TYPE_CHECKING:
    from types import TracebackType

    from lwbatch.pacing.shared import Sharing

Doubles = MutableSequence[float]
Sleep = Callable[[float], Awaitable[None]]


def ring_stamps(ring: Sequence[float], next_slot: int) -> list[float]:
    """The grant times a window's ring holds, oldest first (`next_slot`: the oldest)."""
    return [t for t in (*ring[next_slot:], *ring[:next_slot]) if t != -math.inf]


class LimiterState(Protocol):
    """The cells a BudgetLimiter reads and writes, and the turns it takes with others."""

    budget: Budget

    @property
    def closed(self) -> bool: ...

    @property
    def shared(self) -> bool: ...

    def limiter_cells(self) -> Doubles:
        """The theoretical arrival time and a 429's pause."""
        ...

    def window_views(self) -> list[tuple[Doubles, Doubles]]:
        """Per window of the budget, its ring of grant times and its cells."""
        ...

    async def lock(self, sleep: Sleep) -> None: ...

    def unlock(self) -> None: ...

    def __enter__(self) -> LimiterState: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def ahead(self, now: float, ready: float) -> int:
        """Waiting limiters to be served before this one (0: its turn)."""
        ...

    def turn_wait(self, now: float, ready: float, ahead: int) -> float:
        """How long to sleep before asking again."""
        ...

    def wanting(self) -> None: ...

    def granted(self, now: float, *, more: bool) -> None: ...

    def idle(self) -> None: ...

    def sharing(self) -> Sharing | None: ...

    def close(self) -> None: ...


class LocalState:
    """A limiter's state in its own process: plain arrays, no lock, no turns."""

    shared = False
    closed = False

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def limiter_cells(self) -> Doubles:
        return array("d", [-math.inf, -math.inf])

    def window_views(self) -> list[tuple[Doubles, Doubles]]:
        return [
            (array("d", [-math.inf]) * w.requests, array("d", [0.0, -math.inf]))
            for w in self.budget.windows
        ]

    async def lock(self, sleep: Sleep) -> None:
        return None

    def unlock(self) -> None:
        return None

    def __enter__(self) -> LocalState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def ahead(self, now: float, ready: float) -> int:
        return 0

    def turn_wait(self, now: float, ready: float, ahead: int) -> float:
        return ready - now

    def wanting(self) -> None:
        return None

    def granted(self, now: float, *, more: bool) -> None:
        return None

    def idle(self) -> None:
        return None

    def sharing(self) -> Sharing | None:
        return None

    def close(self) -> None:
        return None


__all__ = ["Doubles", "LimiterState", "LocalState", "ring_stamps"]
