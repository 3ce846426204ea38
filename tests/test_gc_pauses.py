"""Garbage collection at the limiter's known points, and the window stamps its pauses move."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from lwbatch.config import Budget, Rate
from lwbatch.pacing import gc_pauses, limiter
from lwbatch.pacing.limiter import STALL_LOOKBACK, BudgetLimiter
from tests.conftest import FakeClock


@pytest.fixture
def gc_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


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
    pause = 0.3

    def collect(_clock: object) -> float:
        clock.now += pause  # the loop stood still this long
        return pause

    monkeypatch.setattr(limiter, "collect_if_due", collect)
    await lim.acquire()  # grant 11 leaves after the pause, which restamps grant 10
    monkeypatch.setattr(limiter, "collect_if_due", lambda _clock: 0.0)
    times = []
    for _ in range(9):
        await lim.acquire()
        times.append(clock())
    # Grant 10 (within STALL_LOOKBACK before the pause) may have reached the server
    # `pause` late, so grant 20, one window after it, waits that much longer; paced by
    # rate alone it would have left at last_grant + 1.0 + 0.2.
    assert STALL_LOOKBACK < 0.1
    assert times[-1] == pytest.approx(last_grant + 1.0 + pause)
