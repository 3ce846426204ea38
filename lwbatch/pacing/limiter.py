"""The request budget: pacing by theoretical arrival time plus exact sliding windows.

Two mechanisms, because neither alone gives what users are promised:

* Pacing is GCRA (the Generic Cell Rate Algorithm, "virtual scheduling", ITU-T I.371):
  each grant moves a theoretical arrival time (TAT) on by one emission interval; a
  request may leave once ``now >= TAT - tolerance``. Because TAT advances from its own
  previous value rather than from the (late) wake-up time, a late wake-up is caught up
  instead of being lost, so the sustained rate is the full budget. aiolimiter's
  ``AsyncLimiter(1, T/N)`` measured 92.9% here because it loses that lateness.
* Each window ``N/period`` keeps the times of the last N grants in a ring; a grant must
  wait until the oldest of them is ``period`` old. That makes "at most N in any sliding
  window" hold exactly, bursts and all. ``AsyncLimiter(N, period)`` alone let 200,055 of
  a 200,000/h budget out in the first second.

A 429 from the server pauses the whole limiter (every worker) until Retry-After.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from lwbatch.config import Budget, Rate
from lwbatch.errors import UsageError
from lwbatch.pacing.gc_pauses import collect_if_due
from lwbatch.pacing.state import Doubles, LimiterState, LocalState, Sleep, ring_stamps

if TYPE_CHECKING:
    from lwbatch.pacing.shared import SharedLedger, Sharing

Clock = Callable[[], float]
# Grant-to-socket time is ~1 ms on loopback (p99 6-9 ms with 350 in flight, measured).
STALL_LOOKBACK = 0.05


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    granted: int
    waiting: int
    paused_until: float
    rate: float


_RESIDUE = 1e-9  # seconds
# A window's cells: the ring's next slot, the latest stamp, whether a full round was seen.
_NEXT, _LAST = 0, 1
# The limiter's own cells: the theoretical arrival time, and a 429's pause.
_TAT, _PAUSED = 0, 1


class _Window:
    """The grant times of the last N requests, to enforce N per sliding period.

    Stamps never go backwards and are never earlier than the real grant times, so
    the guarantee only gets stricter. The ring and the cells (next slot, last stamp)
    are the limiter state's (lwbatch/pacing/state.py).
    """

    __slots__ = ("_period", "_ring", "_cells", "_cold", "_fresh_until")

    def __init__(
        self, rate: Rate, margin: float, cold_start: float, ring: Doubles, cells: Doubles
    ) -> None:
        # The margin absorbs send/receive jitter so a server counting arrivals in its
        # own window rarely sees N+1 (see Budget.margin).
        self._period = rate.period + margin
        self._ring = ring
        self._cells = cells
        self._cold = cold_start
        # Until when this limiter's grants are stamped `cold` later: one window from
        # its first grant, as its process' connections are new, whatever the others
        # sharing the window did. Bounded in time, not in grants: a count of grants
        # lasts several windows when processes share, and each of those windows would
        # add `cold` to the next one's for good.
        self._fresh_until: float | None = None

    def free_at(self) -> float:
        return self._ring[int(self._cells[_NEXT])] + self._period

    def _append(self, stamp: float) -> None:
        ring, cells = self._ring, self._cells
        slot = int(cells[_NEXT])
        ring[slot] = stamp
        cells[_NEXT] = (slot + 1) % len(ring)

    def warm(self) -> None:
        """Stamp no grant `cold` later: the connections are not this window's first."""
        self._fresh_until = -math.inf

    def stall(self, since: float, delay: float) -> None:
        """Grants stamped at or after `since` may leave `delay` later: restamp them."""
        ring = self._ring
        slot = int(self._cells[_NEXT])
        for _ in range(len(ring)):
            slot = (slot - 1) % len(ring)
            if ring[slot] < since:
                break
            ring[slot] += delay
        if self._cells[_LAST] >= since:
            self._cells[_LAST] += delay

    def record(self, now: float) -> None:
        # The first window's requests open new connections: stamp them `cold` later so
        # the server's first window cannot hold N+1. No other spreading: the limiter
        # never bursts after idle time, and a catch-up burst respaced here would shift
        # every later grant by its lateness for good (measured: 95% of a saturated
        # 400/s window instead of 99%).
        cells = self._cells
        if self._fresh_until is None:
            self._fresh_until = now + self._period
        cold = self._cold if now < self._fresh_until else 0.0
        cells[_LAST] = max(now + cold, cells[_LAST])
        self._append(cells[_LAST])

    @property
    def size(self) -> int:
        return len(self._ring)

    def rebuild(self, stamps: list[float]) -> None:
        """Hold the last N of `stamps` (sorted) instead."""
        ring, kept = self._ring, stamps[-len(self._ring) :]
        for slot in range(len(ring)):
            ring[slot] = kept[slot] if slot < len(kept) else -math.inf
        self._cells[_NEXT] = len(kept) % len(ring)
        if kept:
            self._cells[_LAST] = max(self._cells[_LAST], kept[-1])

    def stamps(self) -> list[float]:
        """The grant times held, oldest first."""
        return ring_stamps(self._ring, int(self._cells[_NEXT]))


class BudgetLimiter:
    """Grants one request at a time within a :class:`Budget`; the default Limiter seam.

    `clock` and `sleep` are injectable so tests run hours of budget in milliseconds.
    Waiters are served first come, first served. With a `ledger`
    (:meth:`SharedLedger.open <lwbatch.pacing.shared.SharedLedger.open>`) the pacing
    and the windows are those of every limiter of the same identity on this machine,
    and their grants take turns; :meth:`close` leaves the ledger.
    """

    def __init__(
        self,
        budget: Budget,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        on_grant: Callable[[float], None] | None = None,
        loopback: bool = False,
        ledger: SharedLedger | None = None,
    ) -> None:
        self._budget = budget
        self._clock = clock
        self._sleep = sleep
        self._interval = 0.0 if budget.is_unlimited else 1.0 / budget.rate
        self._tolerance = max(budget.tolerance, self._interval)
        self._unlimited = budget.is_unlimited
        cold = budget.cold_start_for(loopback=loopback)
        if ledger is not None and ledger.budget != budget:
            raise UsageError(
                f"`ledger` keeps the budget {ledger.budget.describe()}, not "
                f"{budget.describe()}: open it for the budget it is to keep"
            )
        state: LimiterState = ledger if ledger is not None else LocalState(budget)
        self._cells = state.limiter_cells()
        self._windows = [
            _Window(w, budget.margin_for(w), cold, ring, cells)
            for w, (ring, cells) in zip(budget.windows, state.window_views(), strict=True)
        ]
        self._state = state
        self._lock = anyio.Lock(fast_acquire=True)
        self._granted = 0
        self._waiting = 0
        self._watchers: list[Callable[[float], None]] = [on_grant] if on_grant else []

    @property
    def budget(self) -> Budget:
        return self._budget

    def ready_at(self) -> float:
        """The earliest time the next request may leave."""
        return max(
            self._cells[_TAT] - self._tolerance,
            self._cells[_PAUSED],
            *(w.free_at() for w in self._windows),
        )

    async def acquire(self) -> None:
        """Wait until one request may leave, and count it as sent."""
        # Collections run here, where their pause is known (see lwbatch/pacing/gc_pauses.py).
        if pause := collect_if_due(self._clock):
            self._stalled(self._clock() - pause, pause)
        if self._unlimited and not self._waiting:
            # No budget to keep: only a 429's pause holds requests back. Skipping the
            # lock here saves a few microseconds per request when CPU is the limit.
            now = self._clock()
            if now >= self._cells[_PAUSED]:
                self._granted += 1
                for watcher in self._watchers:
                    watcher(now)
                return
        state = self._state
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    await state.lock(self._sleep)
                    try:
                        now = self._clock()
                        ready = self.ready_at()
                        # Sharing: the waiting limiters served less recently go first.
                        ahead = state.ahead(now, ready)
                        granted = ready <= now and not ahead
                        if granted:
                            self._grant(now)
                        else:
                            state.wanting()
                    finally:
                        state.unlock()
                    if granted:
                        break
                    # Never a sleep shorter than the residue of float rounding: a clock
                    # that stands still while tasks run (virtual time) would wake at
                    # once, see the same residue, and spin.
                    await self._sleep(max(state.turn_wait(now, ready, ahead), _RESIDUE))
                for watcher in self._watchers:
                    watcher(now)
        finally:
            self._waiting -= 1
            if not self._waiting:
                state.idle()

    def _grant(self, now: float) -> None:
        if self._cells[_TAT] >= now:
            self._cells[_TAT] += self._interval
        else:
            # Idle (or later than the tolerance): no lateness to catch up, so
            # no burst either; the tolerance is kept for later wake-ups.
            self._cells[_TAT] = now + self._tolerance + self._interval
        for window in self._windows:
            window.record(now)
        self._granted += 1
        self._state.granted(now, more=self._waiting > 1)

    def _stalled(self, started: float, pause: float) -> None:
        # Grants of the last STALL_LOOKBACK s may still have been on their way to the
        # socket when the loop stopped; the server then saw them `pause` later.
        if self._state.closed:
            return
        with self._state:
            for window in self._windows:
                window.stall(started - STALL_LOOKBACK, pause)

    def watch(self, callback: Callable[[float], None]) -> Callable[[], None]:
        """Call `callback(t)` with the clock time of every grant, until unwatched."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback)

    def restore(self, grants: Sequence[float]) -> None:
        """Count requests an earlier process sent (clock times, oldest first).

        A shared limiter adds them to its ledger: give it only those the ledger does
        not hold (it holds every request sent while runs shared it; not those of a
        run that kept its budget to itself, or of one before it was replaced).
        """
        fresh = sorted(grants)
        if not fresh:
            return
        with self._state:
            for window in self._windows:
                window.rebuild(sorted([*window.stamps(), *fresh]))
                if not self._state.shared:
                    # A limiter alone resumes its own earlier run: that run's first
                    # window was stamped cold already.
                    window.warm()
            self._cells[_TAT] = max(self._cells[_TAT], fresh[-1] + self._interval)

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` (a 429's Retry-After); shared limiters all."""
        if self._state.closed:
            return  # a late answer after the run: nothing left to hold
        with self._state:
            self._cells[_PAUSED] = max(self._cells[_PAUSED], self._clock() + seconds)

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(
            granted=self._granted,
            waiting=self._waiting,
            paused_until=self._cells[_PAUSED],
            rate=self._budget.rate,
        )

    def sharing(self) -> Sharing | None:
        """Who else drew from the budget while this limiter did (None: not shared)."""
        return self._state.sharing()

    def close(self) -> None:
        """Leave the shared ledger (nothing to do for a limiter of its own)."""
        self._state.close()

    def __repr__(self) -> str:
        state = f"granted={self._granted} waiting={self._waiting}"
        shared = " shared" if self._state.shared else ""
        return f"<BudgetLimiter {self._budget.describe()}{shared} {state}>"
