"""Run statistics: counted while running, reported as a frozen snapshot at the end."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

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

    def buckets(self) -> dict[int, int]:
        """The counts by bucket: histograms of one kind add up bucket by bucket."""
        return dict(self._buckets)

    @classmethod
    def from_buckets(cls, buckets: dict[int, int]) -> LatencyHistogram:
        histogram = cls()
        histogram._buckets.update(buckets)
        histogram.count = sum(buckets.values())
        return histogram

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
    invalid_resumed: int = 0  # of those, invalid rows
    requests_sent: int = 0
    in_flight: int = 0  # this run's requests on the wire now
    peak_in_flight: int = 0
    limit_at_peak: int = 0  # the in-flight cap in force when the peak was reached
    requests_by_outcome: Counter[str] = field(default_factory=Counter)
    scored: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    cached: Counter[str] = field(default_factory=Counter)  # answers found in the cache
    latency: dict[str, LatencyHistogram] = field(default_factory=dict)
    # Wall-clock times of the first and the last request sent (the sending phase).
    first_sent: float | None = None
    last_sent: float | None = None

    def mark_sent(self) -> None:
        now = time.time()
        if self.first_sent is None:
            self.first_sent = now
        self.last_sent = now

    def record_latency(self, model: str, seconds: float) -> None:
        histogram = self.latency.get(model)
        if histogram is None:
            histogram = self.latency[model] = LatencyHistogram()
        histogram.add(seconds)


class OutputTally:
    """What an output holds, counted table by table: rows, invalid rows, and per model
    column its scored cells and its error cells by type (an invalid row's cells, all
    `invalid_input`, are counted as the one invalid row)."""

    def __init__(self, models: tuple[str, ...]) -> None:
        self.models = models
        self.rows = 0
        self.invalid_rows = 0
        self.scored: Counter[str] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        for index, model in enumerate(self.models):
            errors = table.column(model).combine_chunks().field("error")
            self.scored[model] += errors.null_count
            if errors.null_count == len(errors):
                continue
            # Counted in Python: pyarrow.compute's value_counts would import ~9 MB at
            # the end of every run, where its memory peaks.
            for error, count in Counter(errors.to_pylist()).items():
                if error is None:
                    continue
                if error == INVALID_INPUT:
                    if index == 0:
                        self.invalid_rows += count
                else:
                    self.errors[(model, error)] += count


INVALID_INPUT = "invalid_input"
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
    invalid_resumed: int = 0  # of rows_resumed, invalid rows (the rest are revisions)
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
    # This run's requests, and the other runs', as shares of what the budget allowed
    # while it ran (rate x elapsed): they add up to at most 100%.
    budget_share: float | None = None
    others_share: float | None = None
    # What the output holds as a whole (rows an earlier run wrote included), when the
    # report is of a file's run: rows, invalid rows, and per model its scored and error
    # cells (an invalid row's cells are the invalid row, counted once).
    output_rows: int | None = None
    output_invalid_rows: int | None = None
    output_scored: dict[str, int] = field(default_factory=dict)
    output_errors: dict[str, dict[str, int]] = field(default_factory=dict)
    # What this report cannot say.
    unmeasured: str = ""
    # From the first request to the last: the part of the run the budget was used in.
    sending_seconds: float | None = None
    # Answers an earlier run (or attempt) kept, and requests that attempts which then
    # failed had paid for (Spark).
    answers_resumed: int = 0
    requests_failed_attempts: int = 0

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
            if error == INVALID_INPUT:
                continue  # an invalid row is counted once, as a row (invalid_rows)
            per_model.setdefault(model, {})[error] = count
            by_type[error] += count
        shares = _shares(sharing, budget_rate, elapsed)
        return cls(
            models=models,
            rows_read=stats.rows_read,
            invalid_rows=stats.invalid_rows,
            first_invalid=stats.first_invalid,
            duplicate_rows=stats.duplicate_rows,
            distinct_revisions=stats.distinct_revisions,
            rows_written=stats.rows_written,
            rows_resumed=stats.rows_resumed,
            invalid_resumed=stats.invalid_resumed,
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
            budget_share=shares[0],
            others_share=shares[1],
            cached_per_model={m: stats.cached[m] for m in models if stats.cached[m]},
            sending_seconds=None
            if stats.first_sent is None or stats.last_sent is None
            else round(stats.last_sent - stats.first_sent, 3),
        )

    def with_output(self, tally: OutputTally) -> RunReport:
        """This report, with what the output holds as a whole."""
        errors: dict[str, dict[str, int]] = {m: {} for m in tally.models}
        for (model, error), count in sorted(tally.errors.items()):
            errors[model][error] = count
        return replace(
            self,
            output_rows=tally.rows,
            output_invalid_rows=tally.invalid_rows,
            output_scored={m: tally.scored[m] for m in tally.models},
            output_errors=errors,
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
        data["budget_utilisation_sending"] = self.sending_share()
        return data

    def sending_share(self) -> float | None:
        """The requests sent over what the budget allowed from the first to the last."""
        sending = self.sending_seconds
        if not self.limited or sending is None or sending < SHORTEST_COMPARED:
            return None
        return round(self.requests_sent / (self.budget_rate * sending), 4)

    def _peak(self) -> str:
        line = f"in flight (peak)    {self.peak_in_flight:>10,}   {self._peak_limit()}"
        return line.rstrip()

    def _peak_limit(self) -> str:
        if not self.peak_in_flight or not self.limit_at_peak:
            return ""
        return f"limit {self.limit_at_peak:,} when the peak was reached"

    def _shared(self) -> str:
        others = self.shared_with or 0
        runs = f"{others:>10,}   other run{'s' * (others != 1)}"
        if not others or self.budget_share is None or self.others_share is None:
            return f"budget shared with  {runs}; this run had the budget to itself"
        return (
            f"budget shared with  {runs}; of what the budget allowed while this run ran, "
            f"it sent {100 * self.budget_share:.1f}%, the others {100 * self.others_share:.1f}%"
        )

    def _rate(self) -> str:
        line = f"request rate        {self.request_rate:>10.2f} /s   budget {self.budget}"
        if not self.limited:
            return line
        sent_for = self.sending_seconds
        if self.elapsed_seconds < SHORTEST_COMPARED or (
            sent_for is not None and sent_for < SHORTEST_COMPARED
        ):
            return line + " (too short a run to compare with its rate)"
        used = 100 * self.request_rate / self.budget_rate
        line += f" ({self.budget_rate:.2f}/s, {used:.1f}% used"
        sending = self.sending_share()
        if sending is not None and self.sending_seconds is not None:
            line += f"; {100 * sending:.1f}% over the {self.sending_seconds:,.0f} s of sending"
        return line + ")"

    def _this_run(self) -> list[str]:
        done = self.rows_resumed - self.invalid_resumed
        resumed = f"   {done:,} done by an earlier run: not asked again" if done else ""
        cached = sum(self.cached_per_model.values())
        return [
            "this run",
            f"rows read           {self.rows_read:>10,}",
            f"  invalid rows      {self.invalid_rows:>10,}"
            + (f"   first: {self.first_invalid}" if self.first_invalid else ""),
            f"  duplicates        {self.duplicate_rows:>10,}",
            f"distinct revisions  {self.distinct_revisions:>10,}{resumed}",
            *(
                [f"from the cache      {cached:>10,}   answers that cost no request"]
                if cached
                else []
            ),
            *(
                [
                    f"answers kept before {self.answers_resumed:>10,}   by an earlier run or "
                    "attempt: not asked again"
                ]
                if self.answers_resumed
                else []
            ),
            f"requests sent       {self.requests_sent:>10,}   "
            + ", ".join(f"{k}: {v:,}" for k, v in self.requests_by_outcome.items()),
            *(
                [
                    f"  by failed attempts{self.requests_failed_attempts:>10,}   of those, "
                    "sent by task attempts that then failed (as their last commit tells)"
                ]
                if self.requests_failed_attempts
                else []
            ),
            f"elapsed             {self.elapsed_seconds:>10.1f} s",
            self._rate(),
            *(
                [f"budget from         {'':>10}   {self.budget_source}: {self.budget_reason}"]
                if self.budget_reason
                else []
            ),
            *([self._shared()] if self.shared_with is not None else []),
            *(
                [f"not measured        {'':>10}   {self.unmeasured}"]
                if self.unmeasured
                else [self._peak()]
            ),
            f"concurrency         {'':>10}   {self.concurrency} (at the end)",
        ]

    def _cells(self) -> tuple[str, dict[str, int], dict[str, dict[str, int]]]:
        """The per-model figures the table shows, and their scope."""
        if self.output_rows is not None:
            return "cells in the output", self.output_scored, self.output_errors
        errors = {
            model: {e: n for e, n in found.items() if e != INVALID_INPUT}
            for model, found in self.errors_per_model.items()
        }
        return "this run's answers", self.scores_per_model, errors

    def render(self) -> str:
        """The human summary printed at the end of a run: what this run did, then what
        the output holds; each figure says its scope (rows, or (row, model) cells)."""
        lines = self._this_run()
        if self.output_rows is not None:
            invalid = self.output_invalid_rows or 0
            lines += [
                "",
                f"the output{f': {self.output}' if self.output else ''}",
                f"rows written        {self.output_rows:>10,}   "
                f"{self.output_rows - invalid:,} revisions, {invalid:,} invalid rows",
            ]
        scope, scored, errors = self._cells()
        latency = "(this run's answers)" if not self.unmeasured else "(not measured)"
        lines += [
            "",
            f"{'model':<32} {'scored':>9} {'errors':>8}  {'p50':>7} {'p95':>7} {'p99':>7}",
            f"{'':<32} {f'({scope})':>18}  {latency:>23}",
        ]
        for model in self.models:
            lat = self.latency_seconds.get(model, {})
            lines.append(
                f"{model:<32} {scored.get(model, 0):>9,} "
                f"{sum(errors.get(model, {}).values()):>8,}  "
                + " ".join(f"{format_seconds(lat.get(q)):>7}" for q in ("p50", "p95", "p99"))
            )
        by_type: Counter[str] = Counter()
        for found in errors.values():
            by_type.update(found)
        in_output = self.output_rows is not None
        bad = (self.output_invalid_rows or 0) if in_output else self.invalid_rows
        if bad:
            where = "in the output" if in_output else "this run read"
            lines += ["", f"invalid rows {where}: {bad:,}, each with invalid_input in every column"]
        if by_type:
            lines += [
                "",
                f"errors ({scope}): "
                + ", ".join(f"{k}: {v:,}" for k, v in sorted(by_type.items())),
            ]
        if self.output and self.output_rows is None:
            lines += ["", f"output: {self.output}"]
        return "\n".join(lines)


def _shares(
    sharing: Sharing | None, rate: float, elapsed: float
) -> tuple[float | None, float | None]:
    """This run's requests and the others', as shares of what the budget allowed while
    it ran (rate x elapsed): together at most 1, whatever a start-up burst added."""
    if sharing is None or not math.isfinite(rate) or rate <= 0 or elapsed <= 0:
        return None, None
    allowed = rate * elapsed
    mine = min(sharing.granted / allowed, 1.0)
    others = min((sharing.total - sharing.granted) / allowed, 1.0 - mine)
    return _round(mine), _round(others)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"
