"""What a job will cost, before it sends anything: rows, distinct keys, requests per
model and the hours they take at each tier and at the run's own budget.

The input is read as `score` reads it, and every item goes through the same Router
(key rules, targets, refusals, cache), so the counts are what `score` sends when
nothing fails: one request per (key, model) that needs one, and for batched models one
per full batch of one wiki's revisions (`score` may send a few more partial batches
when a wiki's rows are sparse and the input arrives slower than its linger).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lwbatch.config import Budget, Tier
from lwbatch.engine.router import Answered, Kind, Router
from lwbatch.engine.stats import RunStats
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import Revision
from lwbatch.seams import Item, ScoreCache
from lwbatch.tokens import BudgetChoice
from lwbatch.wikis import wikipedia


@dataclass(slots=True)
class Plan:
    """The cost of scoring an input with some models under a budget."""

    models: tuple[str, ...]
    budget: BudgetChoice
    rows: int = 0
    invalid: int = 0
    duplicates: int = 0
    distinct: int = 0
    # model (as named) -> requests it needs; and rows it answers without one
    requests: dict[str, int] = field(default_factory=dict)
    answered_without_request: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)  # answers a cache already has

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def hours(self, budget: Budget) -> float:
        """Hours the requests take at `budget`'s sustained rate (0 when unlimited)."""
        if budget.is_unlimited or not self.total_requests:
            return 0.0
        return self.total_requests / budget.rate / 3600.0

    def estimate(self) -> str:
        """`2,000,000 requests: 40 h 00 m anonymous, 20 h 00 m authenticated, ...`."""
        tiers = ", ".join(f"{_duration(self.hours(Budget.for_tier(t)))} {t.value}" for t in Tier)
        own = self.budget.budget
        mine = (
            "unlimited budget"
            if own.is_unlimited
            else f"{_duration(self.hours(own))} at this run's budget {own.describe()}"
        )
        cached = sum(self.cached.values())
        kept = f"{cached:,} answer{'s' * (cached != 1)} cached, " if cached else ""
        total = self.total_requests
        return f"{kept}{total:,} request{'s' * (total != 1)}: {tiers}; {mine}"

    def to_dict(self) -> dict[str, Any]:
        own = self.budget.budget
        window = min(own.windows, key=lambda w: w.per_second, default=None)
        return {
            "rows": self.rows,
            "distinct": self.distinct,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "requests": dict(self.requests),
            "answered_without_request": dict(self.answered_without_request),
            "cached": dict(self.cached),
            "total_requests": self.total_requests,
            "budget": {
                "requests": window.requests if window else None,
                "period_s": window.period if window else None,
                "source": self.budget.source,
                "reason": self.budget.reason,
                "describe": own.describe(),
            },
            "hours": {
                **{t.value: round(self.hours(Budget.for_tier(t)), 4) for t in Tier},
                "budget": round(self.hours(own), 4),
            },
        }

    def render(self) -> str:
        width = max((len(m) for m in self.models), default=5)
        lines = [
            f"rows                {self.rows:>12,}",
            f"  invalid           {self.invalid:>12,}",
            f"  duplicates        {self.duplicates:>12,}",
            f"distinct revisions  {self.distinct:>12,}",
            "",
            f"{'model':<{width}}  {'requests':>12}  {'cached':>10}  {'no request':>10}",
            *(
                f"{m:<{width}}  {self.requests.get(m, 0):>12,}  {self.cached.get(m, 0):>10,}  "
                f"{self.answered_without_request.get(m, 0):>10,}"
                for m in self.models
            ),
            "",
            f"budget: {self.budget.budget.describe()} ({self.budget.source}: {self.budget.reason})",
            self.estimate(),
        ]
        return "\n".join(lines)


class Planner:
    """Counts, item by item, what `score` would send for them: each item goes through
    the Router that score's producer uses."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        lang: str,
        budget: BudgetChoice,
        cache: ScoreCache | None = None,
    ) -> None:
        self._specs = list(specs)
        self._router = Router(self._specs, wikipedia(lang), cache=cache)
        self._stats = RunStats()
        # (column, wiki) -> revisions of that wiki for a batched column
        self._batched: Counter[tuple[str, str]] = Counter()
        names = [s.name for s in self._specs]
        self.plan = Plan(
            models=tuple(names),
            budget=budget,
            requests=dict.fromkeys(names, 0),
            answered_without_request=dict.fromkeys(names, 0),
            cached=dict.fromkeys(names, 0),
        )

    def add(self, items: Iterable[Item]) -> None:
        plan = self.plan
        for item in items:
            if self._router.sort(item, self._stats) is not Kind.NEW:
                continue
            assert isinstance(item, Revision)
            for spec, decision in self._router.decide(item):
                if isinstance(decision, Answered):
                    counts = (
                        plan.cached
                        if decision.origin == "cached"
                        else (plan.answered_without_request)
                    )
                    counts[spec.name] += 1
                elif spec.max_batch > 1:
                    self._batched[(spec.name, item.wiki.dbname)] += 1
                else:
                    plan.requests[spec.name] += 1

    @property
    def first_invalid(self) -> str:
        """ "row N: reason" of the first invalid row read."""
        return self._stats.first_invalid

    def finish(self) -> Plan:
        stats, plan = self._stats, self.plan
        plan.rows, plan.invalid = stats.rows_read, stats.invalid_rows
        plan.duplicates, plan.distinct = stats.duplicate_rows, stats.distinct_revisions
        specs = {s.name: s for s in self._specs}
        for (column, _), count in self._batched.items():
            plan.requests[column] += math.ceil(count / specs[column].max_batch)
        self._batched.clear()
        return plan


def _duration(hours: float) -> str:
    minutes = round(hours * 60)
    return f"{minutes // 60} h {minutes % 60:02d} m"


__all__ = ["Plan", "Planner"]
