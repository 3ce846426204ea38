"""What every task of a Spark job did, added up on the driver through one accumulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.accumulators import AccumulatorParam
from pyspark.sql import SparkSession

from lwbatch.engine.stats import LatencyHistogram, RunStats

# The counts of RunStats a task adds, and those of the job's progress.
COUNTS = (
    "rows_read",
    "invalid_rows",
    "duplicate_rows",
    "distinct_revisions",
    "requests_sent",
    "peak_in_flight",  # summed over tasks: the most the job can have had at once
    "answers_resumed",  # answers found in the progress area: not asked again
    "requests_failed_attempts",  # paid by attempts that failed, as they last committed
)
Tally = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Counters:
    """What the tasks did: rows read, invalid, duplicates, distinct keys, requests sent
    (by outcome: HTTP status or failure kind), latency per model and when requests were
    sent. Summed once an action has run, over the task attempts that succeeded; the
    requests of failed attempts are counted apart, as far as their last commit to the
    progress area tells (with no progress area, not at all)."""

    tally: Any  # a Spark accumulator of a Tally

    def add(self, stats: RunStats, **extra: int) -> None:
        self.tally.add(tally_of(stats, **extra))

    def add_requests(self, stats: RunStats) -> None:
        """Only the requests of `stats` (the driver's pre-flight: its rows are the tasks').
        The sending phase stays the tasks': the pre-flight's requests count in their
        shares' first window."""
        tally = tally_of(stats)
        tally["counts"] = {"requests_sent": stats.requests_sent}
        tally.pop("first", None)
        tally.pop("last", None)
        self.tally.add(tally)

    def add_failed_attempts(self, requests: int) -> None:
        if requests:
            self.tally.add({"counts": {"requests_failed_attempts": requests}})

    def values(self) -> dict[str, int]:
        counts = self.tally.value.get("counts", {})
        return {name: int(counts.get(name, 0)) for name in COUNTS}

    def outcomes(self) -> dict[str, int]:
        return dict(sorted(self.tally.value.get("outcomes", {}).items()))

    def cached(self) -> dict[str, int]:
        """Answers per model column found in the score cache."""
        return dict(self.tally.value.get("cached", {}))

    def latency(self) -> dict[str, LatencyHistogram]:
        return {
            model: LatencyHistogram.from_buckets(buckets)
            for model, buckets in self.tally.value.get("latency", {}).items()
        }

    def first_invalid(self) -> str:
        """An invalid row's reason (one task's first), or ""."""
        return str(self.tally.value.get("first_invalid", ""))

    def sending(self) -> tuple[float, float] | None:
        """Wall-clock times of the job's first and last request (None: none sent)."""
        value = self.tally.value
        return (value["first"], value["last"]) if "first" in value else None


def tally_of(stats: RunStats, **extra: int) -> Tally:
    counts = {name: int(getattr(stats, name)) for name in COUNTS if hasattr(stats, name)}
    counts.update(extra)
    tally: Tally = {
        "counts": counts,
        "outcomes": dict(stats.requests_by_outcome),
        "cached": dict(stats.cached),
        "latency": {model: h.buckets() for model, h in stats.latency.items()},
    }
    if stats.first_sent is not None and stats.last_sent is not None:
        tally["first"], tally["last"] = stats.first_sent, stats.last_sent
    if stats.first_invalid:
        tally["first_invalid"] = stats.first_invalid
    return tally


def merge(into: Tally, other: Tally) -> Tally:
    for section in ("counts", "outcomes", "cached"):
        mine = into.setdefault(section, {})
        for key, count in other.get(section, {}).items():
            mine[key] = mine.get(key, 0) + count
    latency = into.setdefault("latency", {})
    for model, buckets in other.get("latency", {}).items():
        mine = latency.setdefault(model, {})
        for bucket, count in buckets.items():
            mine[bucket] = mine.get(bucket, 0) + count
    if "first" in other:
        into["first"] = min(into.get("first", other["first"]), other["first"])
        into["last"] = max(into.get("last", other["last"]), other["last"])
    if "first_invalid" in other:
        into.setdefault("first_invalid", other["first_invalid"])  # one task's first
    return into


class _Merge(AccumulatorParam[Tally]):
    def zero(self, value: Tally) -> Tally:
        return {}

    def addInPlace(self, value1: Tally, value2: Tally) -> Tally:
        return merge(value1, value2)


def counters(spark: SparkSession) -> Counters:
    """Fresh :class:`Counters` for one `score` call."""
    return Counters(spark.sparkContext.accumulator({}, _Merge()))


__all__ = ["COUNTS", "Counters", "counters", "merge", "tally_of"]
