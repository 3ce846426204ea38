"""Run statistics: counted while running, reported as a frozen snapshot at the end."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lwbatch.pacing.shared import Sharing


class LatencyHistogram:
    """Log-bucketed latencies (1% relative precision): constant memory at any count."""

    __slots__ = ("_buckets", "count")
    _BASE = math.log(1.01)
    _FLOOR = 1e-5  # 10 us: anything faster lands in the first bucket

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0

    def add(self, seconds: float) -> None:
        self._buckets[int(math.log(max(seconds, self._FLOOR) / self._FLOOR) / self._BASE)] += 1
        self.count += 1

    def quantile(self, q: float) -> float | None:
        if not self.count:
            return None
        rank = q * (self.count - 1)
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen > rank:
                return self._FLOOR * math.exp((bucket + 0.5) * self._BASE)
        return None  # unreachable: the last bucket always passes the rank


@dataclass(slots=True)
class RunStats:
    """Mutable counters the engine updates; only the engine's task writes them."""

    rows_read: int = 0
    invalid_rows: int = 0
    first_invalid: str = ""  # "row N: reason" of the first invalid row
    duplicate_rows: int = 0
    distinct_revisions: int = 0
    rows_written: int = 0
    rows_resumed: int = 0  # done by an earlier, interrupted run: not asked again
    requests_sent: int = 0
    in_flight: int = 0  # this run's requests on the wire now
    peak_in_flight: int = 0
    limit_at_peak: int = 0  # the in-flight cap in force when the peak was reached
    requests_by_outcome: Counter[str] = field(default_factory=Counter)
    scored: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    cached: Counter[str] = field(default_factory=Counter)  # answers found in the cache
    latency: dict[str, LatencyHistogram] = field(default_factory=dict)

    def record_latency(self, model: str, seconds: float) -> None:
        histogram = self.latency.get(model)
        if histogram is None:
            histogram = self.latency[model] = LatencyHistogram()
        histogram.add(seconds)


# A run shorter than this is all start-up burst: its rate says nothing of the budget's.
SHORTEST_COMPARED = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """What a finished run did, for humans (`render`) and machines (`to_dict`)."""

    models: tuple[str, ...]
    rows_read: int
    invalid_rows: int
    duplicate_rows: int
    distinct_revisions: int
    rows_written: int
    rows_resumed: int
    requests_sent: int
    requests_by_outcome: dict[str, int]
    scores_per_model: dict[str, int]
    errors_per_model: dict[str, dict[str, int]]
    errors_by_type: dict[str, int]
    elapsed_seconds: float
    budget: str
    budget_rate: float
    latency_seconds: dict[str, dict[str, float | None]]
    first_invalid: str = ""
    peak_in_flight: int = 0
    limit_at_peak: int = 0
    concurrency: str = ""
    output: str | None = None
    # Where the budget came from ("rate", "tier" or "token") and why.
    budget_source: str = ""
    budget_reason: str = ""
    cached_per_model: dict[str, int] = field(default_factory=dict)
    # A budget shared with the other runs of this identity on the machine: how many
    # were seen, and this run's part of the requests sent while it ran (None: not shared).
    shared_with: int | None = None
    budget_share: float | None = None

    @classmethod
    def from_stats(
        cls,
        stats: RunStats,
        *,
        models: tuple[str, ...],
        elapsed: float,
        budget: str,
        budget_rate: float,
        concurrency: str = "",
        output: str | None = None,
        budget_source: str = "",
        budget_reason: str = "",
        sharing: Sharing | None = None,
    ) -> RunReport:
        per_model: dict[str, dict[str, int]] = {m: {} for m in models}
        by_type: Counter[str] = Counter()
        for (model, error), count in sorted(stats.errors.items()):
            per_model.setdefault(model, {})[error] = count
            by_type[error] += count
        return cls(
            models=models,
            rows_read=stats.rows_read,
            invalid_rows=stats.invalid_rows,
            first_invalid=stats.first_invalid,
            duplicate_rows=stats.duplicate_rows,
            distinct_revisions=stats.distinct_revisions,
            rows_written=stats.rows_written,
            rows_resumed=stats.rows_resumed,
            requests_sent=stats.requests_sent,
            requests_by_outcome=dict(sorted(stats.requests_by_outcome.items())),
            scores_per_model={m: stats.scored[m] for m in models},
            errors_per_model=per_model,
            errors_by_type=dict(sorted(by_type.items())),
            elapsed_seconds=round(elapsed, 3),
            budget=budget,
            budget_rate=budget_rate,
            latency_seconds={
                model: {
                    "p50": _round(h.quantile(0.50)),
                    "p95": _round(h.quantile(0.95)),
                    "p99": _round(h.quantile(0.99)),
                }
                for model, h in sorted(stats.latency.items())
            },
            peak_in_flight=stats.peak_in_flight,
            limit_at_peak=stats.limit_at_peak,
            concurrency=concurrency,
            output=output,
            budget_source=budget_source,
            budget_reason=budget_reason,
            shared_with=None if sharing is None else sharing.others,
            budget_share=None if sharing is None else _round(sharing.share),
            cached_per_model={m: stats.cached[m] for m in models if stats.cached[m]},
        )

    @property
    def request_rate(self) -> float:
        return self.requests_sent / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def limited(self) -> bool:
        """Whether the run had a budget (not `unlimited`)."""
        return math.isfinite(self.budget_rate) and self.budget_rate > 0

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["models"] = list(self.models)
        data["request_rate"] = round(self.request_rate, 3)
        data["budget_rate"] = self.budget_rate if self.limited else None
        data["budget_utilisation"] = (
            round(self.request_rate / self.budget_rate, 4)
            if self.limited and self.elapsed_seconds >= SHORTEST_COMPARED
            else None
        )
        return data

    def _peak_limit(self) -> str:
        if not self.peak_in_flight or not self.limit_at_peak:
            return ""
        return f"limit {self.limit_at_peak:,} when the peak was reached"

    def _shared(self) -> str:
        others = self.shared_with or 0
        share = (
            f"this run sent {100 * self.budget_share:.1f}% of all requests while it ran"
            if others and self.budget_share is not None
            else "this run had the budget to itself"
        )
        return f"budget shared with  {others:>10,}   other run{'s' * (others != 1)}; {share}"

    def render(self) -> str:
        """The human summary printed at the end of a run."""
        lines = [
            f"rows read           {self.rows_read:>10,}",
            f"  invalid rows      {self.invalid_rows:>10,}"
            + (f"   first: {self.first_invalid}" if self.first_invalid else ""),
            f"  duplicates        {self.duplicate_rows:>10,}",
            f"distinct revisions  {self.distinct_revisions:>10,}",
            f"rows written        {self.rows_written:>10,}"
            + (f"   ({self.rows_resumed:,} from the earlier run)" if self.rows_resumed else ""),
            *(
                [
                    f"from the cache      {sum(self.cached_per_model.values()):>10,}   "
                    "answers that cost no request"
                ]
                if self.cached_per_model
                else []
            ),
            f"requests sent       {self.requests_sent:>10,}   "
            + ", ".join(f"{k}: {v:,}" for k, v in self.requests_by_outcome.items()),
            f"elapsed             {self.elapsed_seconds:>10.1f} s",
            f"request rate        {self.request_rate:>10.2f} /s   budget {self.budget} "
            + (
                f"({self.budget_rate:.2f}/s, "
                f"{100 * self.request_rate / self.budget_rate:.1f}% used)"
                if self.elapsed_seconds >= SHORTEST_COMPARED
                else "(too short a run to compare with its rate)"
            )
            if self.limited
            else f"request rate        {self.request_rate:>10.2f} /s   budget {self.budget}",
            *(
                [f"budget from         {'':>10}   {self.budget_source}: {self.budget_reason}"]
                if self.budget_reason
                else []
            ),
            *([self._shared()] if self.shared_with is not None else []),
            f"in flight (peak)    {self.peak_in_flight:>10,}   {self._peak_limit()}",
            f"concurrency         {'':>10}   {self.concurrency} (at the end)",
            "",
            f"{'model':<32} {'scored':>9} {'errors':>8}  {'p50':>7} {'p95':>7} {'p99':>7}",
        ]
        for model in self.models:
            errors = self.errors_per_model.get(model, {})
            lat = self.latency_seconds.get(model, {})
            scored = self.scores_per_model.get(model, 0)
            lines.append(
                f"{model:<32} {scored:>9,} {sum(errors.values()):>8,}  "
                + " ".join(f"{format_seconds(lat.get(q)):>7}" for q in ("p50", "p95", "p99"))
            )
        if self.errors_by_type:
            lines.append("")
            lines.append(
                "errors: " + ", ".join(f"{k}: {v:,}" for k, v in self.errors_by_type.items())
            )
        if self.output:
            lines.append("")
            lines.append(f"output: {self.output}")
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"
