"""Grouping revisions into batches for models that accept several per request.

A batch shares one language (Lift Wing's rule for revertrisk-language-agnostic) and
holds at most the model's max batch. A partial batch leaves after `linger` seconds so
the tail of a run, or a slow trickle of input, is not held back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Pending items of one model, keyed by language."""

    def __init__(self, max_batch: int, linger: float, clock: Callable[[], float]) -> None:
        if max_batch < 2:
            raise ValueError("a Batcher is for models whose max batch is >= 2")
        self.max_batch = max_batch
        self.linger = linger
        self._clock = clock
        self._pending: dict[str, list[T]] = {}
        self._since: dict[str, float] = {}

    def add(self, key: str, item: T) -> list[T] | None:
        """Queue one item; returns a full batch when this item completes one."""
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = []
            self._since[key] = self._clock()
        batch.append(item)
        if len(batch) >= self.max_batch:
            return self._take(key)
        return None

    def due(self) -> list[list[T]]:
        """Partial batches that have waited `linger` seconds or more."""
        deadline = self._clock() - self.linger
        return [self._take(key) for key, since in list(self._since.items()) if since <= deadline]

    def drain(self) -> list[list[T]]:
        """Every pending batch, full or not (end of input)."""
        return [self._take(key) for key in list(self._pending)]

    def __len__(self) -> int:
        return sum(len(b) for b in self._pending.values())

    def _take(self, key: str) -> list[T]:
        del self._since[key]
        return self._pending.pop(key)
