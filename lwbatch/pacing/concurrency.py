"""How many requests to keep in flight: Little's law on the latency actually observed.

Under a budget of R requests/s with a mean latency of W seconds, R x W requests are in
flight on average (Little's law). Latency is heavy-tailed (revscoring: median 0.45 s,
p99 ~5 s), so the count in flight swings well above its mean; measured here, R x W in
flight held 58-91% of the budget and 1.5-1.75 x R x W held 99%+. Too few in flight
loses budget; too many only queues at the limiter, holds connections and open rows.

The mean is exact over the first `memory` answers, then exponentially weighted over
about that many, so the limit follows a service that slows down or speeds up.
Without a rate to reach (an unlimited budget) Little's law has no target: the limit
stays at `unlimited`, where this client's CPU, not latency, is the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HEADROOM = 1.75
FLOOR = 8
CEILING = 1024
UNLIMITED = 64
INITIAL_LATENCY = 1.0


@dataclass(frozen=True, slots=True)
class ConcurrencySnapshot:
    limit: int
    adaptive: bool
    mean_latency: float | None
    observed: int


class Concurrency:
    """The in-flight limit: fixed if the user chose one, else adapted by Little's law."""

    __slots__ = (
        "_rate",
        "_fixed",
        "_floor",
        "_ceiling",
        "_headroom",
        "_memory",
        "_mean",
        "_observed",
        "limit",
    )

    def __init__(
        self,
        rate: float,
        *,
        fixed: int | None = None,
        floor: int = FLOOR,
        ceiling: int = CEILING,
        headroom: float = HEADROOM,
        memory: int = 500,
    ) -> None:
        if fixed is not None and fixed < 1:
            raise ValueError(f"concurrency must be >= 1, got {fixed}")
        if not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got {floor}, {ceiling}")
        self._rate = rate
        self._fixed = fixed
        self._floor = floor
        self._ceiling = ceiling
        self._headroom = headroom
        self._memory = memory
        self._mean = INITIAL_LATENCY
        self._observed = 0
        self.limit = fixed if fixed is not None else self._target()

    @property
    def adaptive(self) -> bool:
        return self._fixed is None

    @property
    def most(self) -> int:
        """The largest limit this can ever set (connections and open rows are sized by it)."""
        return self._fixed if self._fixed is not None else self._ceiling

    def observe(self, latency: float) -> None:
        """One answer (or failure) took `latency` seconds on the wire."""
        self._observed += 1
        weight = 1.0 / min(self._observed, self._memory)
        self._mean += (latency - self._mean) * weight
        if self._fixed is None:
            self.limit = self._target()

    def _target(self) -> int:
        if math.isinf(self._rate):
            return max(self._floor, min(UNLIMITED, self._ceiling))
        wanted = math.ceil(self._headroom * self._rate * self._mean) + self._floor
        return max(self._floor, min(wanted, self._ceiling))

    def snapshot(self) -> ConcurrencySnapshot:
        return ConcurrencySnapshot(
            limit=self.limit,
            adaptive=self.adaptive,
            mean_latency=self._mean if self._observed else None,
            observed=self._observed,
        )

    def describe(self) -> str:
        """One line for the run report."""
        if self._fixed is not None:
            return f"limit fixed at {self._fixed}"
        if math.isinf(self._rate):
            return f"limit {self.limit} (no budget to reach: the client's CPU is the bound)"
        latency = f"{self._mean:.2f} s" if self._observed else "not measured yet"
        return (
            f"limit {self.limit}, adapted: {self._headroom:g} x {self._rate:.1f}/s"
            f" x mean latency {latency} + {self._floor}"
        )

    def __repr__(self) -> str:
        kind = "adaptive" if self.adaptive else "fixed"
        return f"<Concurrency {kind} limit={self.limit} mean_latency={self._mean:.3f}s>"
