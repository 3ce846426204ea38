"""SIGINT and SIGTERM from the entry point on: one line and exit 130/143, never a traceback.

Until a run opens its own signal receiver (lwbatch/cli/scoring.py), both signals raise
KeyboardInterrupt wherever the main thread is, imports included, and the entry point
turns it into the line; which signal it was decides the exit code. Once the command has
returned, a signal ends the process at once with the same line.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

STOPPING = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


def _raise(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def install(*, fresh: bool = True) -> Callable[[], None]:
    """Raise KeyboardInterrupt on SIGINT and SIGTERM; the function that undoes it.
    `fresh`: signals seen before (by a command run earlier in this process) are forgotten."""
    if fresh:
        _received.clear()
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers (an embedding caller)
    earlier = {sig: signal.signal(sig, _raise) for sig in STOPPING}

    def restore() -> None:
        for sig, handler in earlier.items():
            signal.signal(sig, handler)

    return restore


def last() -> int:
    """The signal that stopped the command (SIGINT when none was seen: a plain Ctrl-C)."""
    return _received[-1] if _received else signal.SIGINT


def message() -> str:
    signum = last()
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


def exit_code() -> int:
    return 128 + last()


def _leave(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    try:
        if sys.stderr is not None:
            sys.stderr.write(f"lwbatch: {message()}\n")
            sys.stderr.flush()
    finally:
        os._exit(exit_code())


def leave_on_signal() -> None:
    """After the command: a signal ends the process at once (its work is done or saved)."""
    for sig in STOPPING:
        signal.signal(sig, _leave)


__all__ = ["exit_code", "install", "last", "leave_on_signal", "message"]
