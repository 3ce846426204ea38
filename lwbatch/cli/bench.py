"""`lwbatch bench`: how close does lwbatch get to a tier's limit, on your machine?

The workload is the real pipeline (a Scorer fanning synthetic revisions out to the
models) against the emulator in a process of its own, with Lift Wing-like latency and
a gateway that answers 429 over budget. Time is compressed: the tier's hourly budget
is shrunk with its window (50,000/h at 360x is 138 per 10 s), so many windows pass in
a minute at the tier's real rate; the per-second cap is kept as it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

from lwbatch.config import Budget, Rate, Tier
from lwbatch.engine.scorer import Scorer
from lwbatch.engine.stats import RunReport, format_seconds
from lwbatch.errors import UsageError
from lwbatch.identity import Identity
from lwbatch.pacing.shared import SharedLedger
from lwbatch.settings import Connection, Hooks, Pacing

DEFAULT_MODELS = ("enwiki-damaging", "enwiki-goodfaith", "revertrisk-language-agnostic")
SAMPLE_EVERY = 0.25


def compressed(tier: Tier, factor: float) -> Budget:
    """The tier's budget with its hourly window `factor` times shorter, same rate."""
    if factor < 1:
        raise UsageError(f"--compress must be >= 1, got {factor:g}")
    hourly = tier.hourly
    requests = math.floor(hourly.requests / factor)
    if requests < 1:
        raise UsageError(f"--compress {factor:g} leaves less than one request per window")
    window = Rate(requests, requests * hourly.period / hourly.requests)
    return Budget(windows=(window, tier.per_second_cap))


@dataclass(slots=True)
class BenchResult:
    budget: str
    budget_rate: float
    seconds: float
    sent: list[float]  # send times, seconds from the start
    in_flight: list[tuple[float, int, int]]  # (time, in flight, limit)
    report: RunReport
    rejected: int  # answered 429 by the server (or the emulator's gateway)
    cpu_seconds: float = 0.0  # this process' CPU time (user + system) while it ran
    started: float = 0.0  # time.monotonic() at the start: one clock for the machine

    @property
    def requests(self) -> int:
        return len(self.sent)

    @property
    def achieved_rate(self) -> float:
        return self.requests / self.seconds

    @property
    def share(self) -> float:
        return self.achieved_rate / self.budget_rate

    def per_second(self) -> list[int]:
        counts = [0] * math.ceil(self.seconds)
        for when in self.sent:
            if 0 <= when < len(counts):
                counts[int(when)] += 1
        return counts

    @property
    def in_flight_mean(self) -> float:
        samples = [n for _, n, _ in self.in_flight]
        return round(sum(samples) / len(samples), 1) if samples else 0.0

    @property
    def cpu_per_request(self) -> float:
        """Seconds of this process' CPU per request sent."""
        return self.cpu_seconds / self.requests if self.requests else 0.0

    def to_dict(self, *, sent: bool = False) -> dict[str, Any]:
        return {
            "benchmark": "lwbatch bench",
            "budget": self.budget,
            "budget_rate": round(self.budget_rate, 4),
            "seconds": self.seconds,
            "requests": self.requests,
            "achieved_rate": round(self.achieved_rate, 3),
            "share_of_budget": round(self.share, 4),
            "rejected_429": self.rejected,
            "in_flight_mean": self.in_flight_mean,
            "in_flight_peak": self.report.peak_in_flight,
            "concurrency": self.report.concurrency,
            "latency_seconds": self.report.latency_seconds,
            "per_second": self.per_second(),
            "cpu_ms_per_request": round(1000 * self.cpu_per_request, 4),
            "shared_with": self.report.shared_with,
            "budget_share": self.report.budget_share,
            "started_monotonic": self.started,
            **({"sent": self.sent} if sent else {}),
        }

    def render(self) -> str:
        lines = [
            f"budget              {self.budget} ({self.budget_rate:.2f}/s)",
            f"measured for        {self.seconds:>10.1f} s",
            f"requests sent       {self.requests:>10,}   rejected with 429: {self.rejected:,}",
            f"achieved            {self.achieved_rate:>10.2f} /s   "
            f"{self.share:.2%} of the budget's rate",
            f"in flight           mean {self.in_flight_mean:,}, "
            f"peak {self.report.peak_in_flight:,} (limit {self.report.limit_at_peak:,} then); "
            f"at the end {self.report.concurrency}",
            f"CPU per request     {1000 * self.cpu_per_request:>10.3f} ms   (this process)",
            "budget              "
            + (
                f"shared with {self.report.shared_with} other process"
                + "es" * (self.report.shared_with != 1)
                + (
                    f"; this one sent {self.report.budget_share:.1%} of what the budget "
                    "allowed while it ran"
                    if self.report.budget_share is not None
                    else ""
                )
                if self.report.shared_with is not None
                else "not shared"
            ),
            "",
            f"{'model':<32} {'p50':>7} {'p95':>7} {'p99':>7}",
        ]
        for model, quantiles in self.report.latency_seconds.items():
            lines.append(
                f"{model:<32} "
                + " ".join(f"{format_seconds(quantiles.get(q)):>7}" for q in ("p50", "p95", "p99"))
            )
        return "\n".join(lines)


async def run_bench(
    *,
    budget: Budget,
    seconds: float,
    models: Sequence[str] = DEFAULT_MODELS,
    connection: Connection,
    pacing: Pacing,
) -> BenchResult:
    """Score synthetic revisions for `seconds`; every send time and in-flight sample.
    With ``pacing.share``, draw from the budget shared by every process of this
    identity (as `lwbatch score` does)."""
    if budget.is_unlimited:
        raise UsageError("lwbatch bench measures against a budget; give --tier or --rate N/PERIOD")
    # As `lwbatch score` runs: one identity, the collector timed.
    pacing = replace(pacing, gc_control=True)
    identity = await Identity.resolve(connection, pacing, budget=budget)
    ledger = await identity.open_ledger(pacing)
    try:
        return await _bench(identity, seconds, models, connection, pacing, ledger)
    finally:
        if ledger is not None:
            await ledger.aclose()


async def _bench(
    identity: Identity,
    seconds: float,
    models: Sequence[str],
    connection: Connection,
    pacing: Pacing,
    ledger: SharedLedger | None,
) -> BenchResult:
    sent: list[float] = []
    samples: list[tuple[float, int, int]] = []
    budget = identity.budget
    scorer = Scorer(
        models,
        connection=connection,
        pacing=pacing,
        identity=identity,
        ledger=ledger,
        hooks=Hooks(on_send=sent.append),
    )

    async def sample() -> None:
        while True:
            samples.append((time.monotonic() - started, scorer.in_flight, scorer.concurrency.limit))
            await anyio.sleep(SAMPLE_EVERY)

    # More revisions than the budget can take in the span, so the budget is the limit.
    revisions = range(1, int(budget.rate * seconds * 2) + 1000)
    async with scorer:
        started = time.monotonic()
        cpu = time.process_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            with anyio.move_on_after(seconds):
                rows = scorer.score(revisions)
                async for _row in rows:
                    pass
            tg.cancel_scope.cancel()
        await scorer.stop(grace=0)
        cpu = time.process_time() - cpu
    times = [t - started for t in sent if t - started < seconds]
    report = scorer.report(call=rows)
    return BenchResult(
        budget=budget.describe(),
        budget_rate=budget.rate,
        seconds=seconds,
        sent=times,
        in_flight=samples,
        report=report,
        rejected=report.requests_by_outcome.get("429", 0),
        cpu_seconds=cpu,
        started=started,
    )


def draw_chart(result: BenchResult, path: Path, *, title: str) -> None:
    """Requests/second over time against the budget's rate; in flight below."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # checked by the CLI before the run; kept for library callers
        raise UsageError(
            "the chart needs matplotlib: pip install 'lwbatch[bench]' (or use --no-chart)"
        ) from None
    per_second = result.per_second()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    top.step(range(len(per_second)), per_second, where="post", label="requests sent per second")
    top.axhline(
        result.budget_rate,
        color="tab:red",
        linestyle="--",
        label=f"budget rate {result.budget_rate:.2f}/s ({result.budget})",
    )
    top.set_ylabel("requests / s")
    top.set_ylim(0, max([result.budget_rate, *per_second]) * 1.25)
    top.legend(loc="lower right")
    top.set_title(title)
    times = [t for t, _, _ in result.in_flight]
    bottom.plot(times, [n for _, n, _ in result.in_flight], label="in flight")
    bottom.plot(times, [lim for _, _, lim in result.in_flight], label="concurrency limit")
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("requests")
    bottom.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def chart_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
