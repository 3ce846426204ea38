"""Work of a job on a worker thread, which a cancelled caller still waits for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread

T = TypeVar("T")


async def on_thread(work: Callable[[], T]) -> T:
    """`work` on a worker thread. Cancelled (Ctrl-C, a caller's timeout), it still waits
    for the thread to end: a job's clean-up must never run beside its own work."""
    running = asyncio.ensure_future(anyio.to_thread.run_sync(work))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        while not running.done():
            try:
                await asyncio.wait([running])
            except asyncio.CancelledError:
                continue  # anyio cancels again on every turn of the loop
        raise


__all__ = ["on_thread"]
