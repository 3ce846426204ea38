"""The layout of a shared budget's file, and its making: a header, each window's rate
and cells, the member slots, then each window's ring of grant times, all doubles. A
file of another format or damaged is replaced, one of another budget refused while its
members live, and a reboot's times moved onto the new clock.
"""

from __future__ import annotations

import fcntl
import logging
import math
import mmap
import os
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import cast

from lwbatch.config import Budget, Rate
from lwbatch.errors import UsageError
from lwbatch.pacing.liveness import alive, boot_id
from lwbatch.pacing.state import Doubles, ring_stamps

log = logging.getLogger("lwbatch")

MAGIC = float(0x6C77_6275_6467)  # "lwbudg"
VERSION = 1.0
# Header cells.
H = 16
H_MAGIC, H_VERSION, H_WINDOWS, H_TAT, H_PAUSED, H_BOOT, H_EPOCH, H_TOTAL, H_TOLERANCE = range(9)
H_SLOTS = 9  # member slots ever used (scans stop there)
# Per window: its rate and margin, then the cells _Window keeps (next slot, last stamp).
W = 8
W_REQUESTS, W_PERIOD, W_MARGIN, W_CELLS = 0, 1, 2, 3
# Per member.
MEMBERS = 64
M = 8
# pid, a random nonce, the process' start time (so a reused pid is told apart), whether
# it waits for a grant, the time of its last one, how many it got.
M_PID, M_NONCE, M_STARTED, M_WAITING, M_LAST, M_GRANTED = range(6)


def members_at(windows: int) -> int:
    """Where the member slots start, after the header and `windows` windows' cells."""
    return H + W * windows


def rings_at(windows: int) -> int:
    return members_at(windows) + M * MEMBERS


def layout(budget: Budget) -> tuple[int, int]:
    """(cells before the rings, cells in all)."""
    rings = rings_at(len(budget.windows))
    return rings, rings + sum(w.requests for w in budget.windows)


def member_alive(cells: Doubles, at: int) -> bool:
    """Whether the process of the member slot at `at` still runs."""
    return alive(cells[at + M_PID], cells[at + M_NONCE], cells[at + M_STARTED])


def open_locked(path: Path, where: str) -> int:
    """An fd of the file now at `path`, under the exclusive lock."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UsageError(f"{where}: cannot open {path.name} ({exc.strerror or exc})") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # replaced while we waited for the lock


def map_ready(fd: int, path: Path, budget: Budget, clock: Callable[[], float]) -> mmap.mmap | None:
    """The file mapped, made ready for `budget`; None when it was replaced instead."""
    rings_at, size = layout(budget)
    length = os.fstat(fd).st_size
    if length == 0:
        os.ftruncate(fd, 8 * size)
        mm = mmap.mmap(fd, 8 * size)
        with memoryview(mm).cast("d") as fresh:
            fresh[:] = _content(budget, clock)
        return mm
    mm = mmap.mmap(fd, length)
    refusal: UsageError | None = None
    with memoryview(mm)[: length - length % 8].cast("d") as view:
        cells = cast(Doubles, view)
        problem = _damage(cells, length)
        stamps: list[float] = []
        tat = paused = -math.inf
        if problem:
            log.warning(
                "budget ledger %s was %s; starting a new one (requests other runs sent "
                "in the last window are not counted)",
                path,
                problem,
            )
        else:
            _move_to_this_boot(cells, clock)
            if _same_budget(cells, budget):
                return mm
            live = _live_pids(cells)
            if live:
                refusal = UsageError(
                    f"another lwbatch run (pid {live[0]}) shares this identity's request "
                    f"budget at {_described(cells)}, and this run asks for "
                    f"{budget.describe()}: give it the same `budget`, or `share_budget=False` "
                    "to keep a budget of its own (the gateway counts both)"
                )
            else:
                stamps = _stamps(cells)
                tat, paused = cells[H_TAT], cells[H_PAUSED]
    # The map holds a duplicate of the fd, and with it the lock: close it first.
    mm.close()
    if refusal is not None:
        raise refusal
    _replace(path, _content(budget, clock, stamps, tat, paused))
    return None


def _damage(cells: Doubles, length: int) -> str:
    if length % 8 or length < 8 * H or cells[H_MAGIC] != MAGIC:
        return "not a budget ledger"
    if cells[H_VERSION] != VERSION:
        return f"of another lwbatch's format ({cells[H_VERSION]:g})"
    windows = int(cells[H_WINDOWS])
    needed = rings_at(windows)
    if not 0 < windows <= 8 or length < 8 * needed:
        return "damaged"
    requests = sum(cells[H + i * W + W_REQUESTS] for i in range(windows))
    if length != 8 * (needed + requests):
        return "damaged"
    return ""


def _same_budget(cells: Doubles, budget: Budget) -> bool:
    ours = [(float(w.requests), w.period, budget.margin_for(w)) for w in budget.windows]
    theirs = [
        tuple(cells[H + i * W + cell] for cell in (W_REQUESTS, W_PERIOD, W_MARGIN))
        for i in range(int(cells[H_WINDOWS]))
    ]
    return ours == theirs and cells[H_TOLERANCE] == budget.tolerance


def _described(cells: Doubles) -> str:
    return Budget(
        windows=tuple(
            Rate(int(cells[H + i * W + W_REQUESTS]), cells[H + i * W + W_PERIOD])
            for i in range(int(cells[H_WINDOWS]))
        )
    ).describe()


def _live_pids(cells: Doubles) -> list[int]:
    first = members_at(int(cells[H_WINDOWS]))
    slots = (first + slot * M for slot in range(int(cells[H_SLOTS])))
    return [int(cells[at + M_PID]) for at in slots if member_alive(cells, at)]


def _stamps(cells: Doubles) -> list[float]:
    """Every grant time the file holds, oldest first (the longest ring has them all)."""
    windows = int(cells[H_WINDOWS])
    ring_at = rings_at(windows)
    best: list[float] = []
    for i in range(windows):
        at = H + i * W
        requests = int(cells[at + W_REQUESTS])
        if requests > len(best):
            best = ring_stamps(cells[ring_at : ring_at + requests], int(cells[at + W_CELLS]))
        ring_at += requests
    return best


def _move_to_this_boot(cells: Doubles, clock: Callable[[], float]) -> None:
    """After a reboot the clock starts again: move every time onto the new clock."""
    boot, epoch = boot_id(), time.time() - clock()
    if (boot and cells[H_BOOT] == boot) or (not boot and _plausible(cells, clock)):
        return
    shift = cells[H_EPOCH] - epoch
    log.info("budget ledger: moving its times onto this boot's clock (%+.0f s)", shift)
    first = members_at(int(cells[H_WINDOWS]))
    for at in (H_TAT, H_PAUSED):
        cells[at] += shift
    for i in range(int(cells[H_WINDOWS])):
        cells[H + i * W + W_CELLS + 1] += shift
    for at in range(first + M * MEMBERS, len(cells)):
        cells[at] += shift
    cells[first : first + M * MEMBERS] = array("d", [0.0] * (M * MEMBERS))
    cells[H_SLOTS] = 0
    cells[H_BOOT], cells[H_EPOCH] = boot, epoch


def _plausible(cells: Doubles, clock: Callable[[], float]) -> bool:
    """No time from the future: without a boot id, the sign of a reboot."""
    latest = max(
        (cells[H + i * W + W_CELLS + 1] for i in range(int(cells[H_WINDOWS]))),
        default=-math.inf,
    )
    return latest <= clock() + 60.0


def _content(
    budget: Budget,
    clock: Callable[[], float],
    stamps: list[float] | None = None,
    tat: float = -math.inf,
    paused: float = -math.inf,
) -> array[float]:
    """A new ledger for `budget`, carrying `stamps` and the pacing of an old one."""
    rings_at, size = layout(budget)
    cells = array("d", [0.0]) * size
    cells[H_MAGIC], cells[H_VERSION], cells[H_WINDOWS] = MAGIC, VERSION, len(budget.windows)
    cells[H_TAT], cells[H_PAUSED] = tat, paused
    cells[H_BOOT], cells[H_EPOCH] = boot_id(), time.time() - clock()
    cells[H_TOTAL], cells[H_TOLERANCE], cells[H_SLOTS] = 0.0, budget.tolerance, 0.0
    ring_at = rings_at
    for i, window in enumerate(budget.windows):
        at = H + i * W
        kept = stamps[-window.requests :] if stamps else []
        cells[at + W_REQUESTS], cells[at + W_PERIOD] = window.requests, window.period
        cells[at + W_MARGIN] = budget.margin_for(window)
        ring = array("d", [-math.inf]) * window.requests
        ring[: len(kept)] = array("d", kept)
        cells[ring_at : ring_at + window.requests] = ring
        cells[at + W_CELLS] = len(kept) % window.requests  # next
        cells[at + W_CELLS + 1] = kept[-1] if kept else -math.inf  # last
        ring_at += window.requests
    return cells


def _replace(path: Path, cells: array[float]) -> None:
    """`cells` as a new file renamed over `path`: a process that still maps the old
    one never sees it shrink under it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(cells.tobytes())
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
