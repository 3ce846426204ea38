"""Garbage collection at the limiter's known points, and the window stamps its pauses move."""

from __future__ import annotations

import gc
import time

import pytest

from lwbatch.config import Budget, Rate
from lwbatch.pacing import gc_pauses, limiter
from lwbatch.pacing.limiter import BudgetLimiter
from tests.conftest import FakeClock


def test_hold_turns_automatic_collection_off_until_the_last_release(gc_enabled: None) -> None:
    gc_pauses.hold()
    gc_pauses.hold()
    assert not gc.isenabled()
    gc_pauses.release()
    assert not gc.isenabled()
    gc_pauses.release()
    assert gc.isenabled()


def test_hold_leaves_collection_off_if_the_program_had_it_off(gc_enabled: None) -> None:
    gc.disable()
    gc_pauses.hold()
    gc_pauses.release()
    assert not gc.isenabled()


def test_collect_if_due_follows_cpythons_thresholds(gc_enabled: None) -> None:
    assert gc_pauses.collect_if_due(time.monotonic) == 0.0  # not held: automatic GC
    gc_pauses.hold()
    try:
        gc.collect()
        assert gc_pauses.collect_if_due(time.monotonic) == 0.0  # nothing allocated since
        threshold0 = gc.get_threshold()[0]
        keep = [[] for _ in range(threshold0 + 10)]
        assert gc_pauses.collect_if_due(time.monotonic) > 0.0
        assert gc.get_count()[0] < threshold0
        del keep
    finally:
        gc_pauses.release()


async def test_a_collection_pause_moves_recent_stamps_on(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    window = Rate(10, 1.0)
    lim = BudgetLimiter(
        Budget(windows=(window,), margin=0.0, cold_start=0.0),
        clock=clock,
        sleep=clock.sleep,
    )
    for _ in range(10):
        await lim.acquire()
    last_grant = clock()
    clock.now += 0.02  # the loop works on; grant 10 may not have reached its socket yet
    pause = 0.3

    def collect(_clock: object) -> float:
        clock.now += pause  # then a collection stops it for this long
        return pause

    monkeypatch.setattr(limiter, "collect_if_due", collect)
    await lim.acquire()  # grant 11 leaves after the pause, which restamps grant 10
    resumed = clock()
    monkeypatch.setattr(limiter, "collect_if_due", lambda _clock: 0.0)
    times = []
    for _ in range(9):
        await lim.acquire()
        times.append(clock())
    assert resumed == pytest.approx(last_grant + 0.02 + pause)
    # Grant 9, 0.12 s before the pause, was long on the wire: its stamp stays, and
    # grant 19 leaves when the rate lets it (8 intervals after grant 11), not one
    # window after a grant 9 moved on by the pause (last_grant - 0.1 + 1.0 + pause).
    assert times[-2] == pytest.approx(resumed + 8 * 0.1)
    # Grant 10, 0.02 s before the pause, may have reached the server `pause` late, so
    # grant 20, one window after it, waits that much longer; paced by rate alone it
    # would have left at resumed + 9 * 0.1 = last_grant + 1.22.
    assert times[-1] == pytest.approx(last_grant + 1.0 + pause)
