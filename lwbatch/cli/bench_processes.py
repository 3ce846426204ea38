"""`lwbatch bench --processes N`: N benchmark processes at once against one emulator,
each drawing from the budget they share (or, with --no-shared-budget, each from a
budget of its own, as two runs did before budgets were shared)."""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from lwbatch.config import Budget
from lwbatch.errors import LWBatchError


@dataclass(frozen=True, slots=True)
class Together:
    """What N processes did in the span they all ran."""

    budget: Budget
    shared: bool
    seconds: float
    sent: list[list[float]]  # per process, machine-wide monotonic times in the span
    rejected: list[int]
    cpu_ms_per_request: list[float]

    @property
    def requests(self) -> int:
        return sum(map(len, self.sent))

    @property
    def share_of_budget(self) -> float:
        return self.requests / self.seconds / self.budget.rate if self.seconds > 0 else 0.0

    def busiest_windows(self) -> list[tuple[str, int, int]]:
        """Per budget window: (window, most requests in any such window, allowed)."""
        times = sorted(t for sent in self.sent for t in sent)
        found = []
        for window in self.budget.windows:
            most = max(
                (bisect_left(times, t + window.period) - i for i, t in enumerate(times)),
                default=0,
            )
            found.append((str(window), most, window.requests))
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": "lwbatch bench --processes",
            "processes": len(self.sent),
            "shared": self.shared,
            "budget": self.budget.describe(),
            "budget_rate": round(self.budget.rate, 4),
            "seconds_together": round(self.seconds, 3),
            "requests": self.requests,
            "share_of_budget": round(self.share_of_budget, 4),
            "rejected_429": sum(self.rejected),
            "busiest_windows": [
                {"window": w, "most": most, "allowed": allowed}
                for w, most, allowed in self.busiest_windows()
            ],
            "per_process": [
                {
                    "requests": len(sent),
                    "share": round(len(sent) / self.requests, 4) if self.requests else None,
                    "rejected_429": rejected,
                    "cpu_ms_per_request": cpu,
                }
                for sent, rejected, cpu in zip(
                    self.sent, self.rejected, self.cpu_ms_per_request, strict=True
                )
            ],
        }

    def render(self) -> str:
        how = "sharing one budget" if self.shared else "each with a budget of its own"
        lines = [
            f"processes           {len(self.sent):>10}   {how}",
            f"budget              {self.budget.describe()} ({self.budget.rate:.2f}/s)",
            f"measured together   {self.seconds:>10.1f} s   (while every process ran)",
            f"requests sent       {self.requests:>10,}   rejected with 429: {sum(self.rejected):,}",
            f"achieved            {self.requests / self.seconds:>10.2f} /s   "
            f"{self.share_of_budget:.2%} of the budget's rate",
            *(
                f"busiest {w:<11} {most:>10,}   of {allowed:,} allowed"
                for w, most, allowed in self.busiest_windows()
            ),
            "",
            f"{'process':<8} {'requests':>9} {'share':>7} {'429s':>6} {'CPU/request':>12}",
        ]
        for number, (sent, rejected, cpu) in enumerate(
            zip(self.sent, self.rejected, self.cpu_ms_per_request, strict=True), start=1
        ):
            share = len(sent) / self.requests if self.requests else 0.0
            lines.append(f"{number:<8} {len(sent):>9,} {share:>7.1%} {rejected:>6,} {cpu:>9.3f} ms")
        return "\n".join(lines)


def run_processes(
    processes: int, child_args: list[str], budget: Budget, *, shared: bool
) -> Together:
    """Start `processes` `lwbatch bench CHILD_ARGS` at once; what they did together."""
    with tempfile.TemporaryDirectory(prefix="lwbatch-bench-") as folder:
        outputs = [Path(folder) / f"process-{i}.json" for i in range(processes)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "lwbatch", "bench", *child_args, "--json", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for out in outputs
        ]
        failures = []
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode:
                failures.append(err.decode(errors="replace").strip().splitlines()[-1:])
        if failures:
            raise LWBatchError(f"a benchmark process failed: {failures[0]}")
        results = [orjson.loads(out.read_bytes()) for out in outputs]
    starts = [r["started_monotonic"] for r in results]
    begin = max(starts)
    end = min(s + r["seconds"] for s, r in zip(starts, results, strict=True))
    sent = [
        [s + t for t in r["sent"] if begin <= s + t < end]
        for s, r in zip(starts, results, strict=True)
    ]
    return Together(
        budget=budget,
        shared=shared,
        seconds=max(end - begin, 0.0),
        sent=sent,
        rejected=[r["rejected_429"] for r in results],
        cpu_ms_per_request=[r["cpu_ms_per_request"] for r in results],
    )


def draw_together(together: Together, path: Path, *, title: str) -> None:
    """Requests/second of each process, stacked, against the budget's rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    begin = min((min(s) for s in together.sent if s), default=0.0)
    seconds = max(math.ceil(together.seconds), 1)
    counts = []
    for sent in together.sent:
        row = [0] * seconds
        for t in sent:
            if 0 <= t - begin < seconds:
                row[int(t - begin)] += 1
        counts.append(row)
    fig, axis = plt.subplots(figsize=(10, 4))
    axis.stackplot(
        range(seconds),
        counts,
        step="post",
        labels=[f"process {i}" for i in range(1, len(counts) + 1)],
    )
    axis.axhline(
        together.budget.rate,
        color="tab:red",
        linestyle="--",
        label=f"budget rate {together.budget.rate:.2f}/s",
    )
    axis.set_xlabel("seconds (while every process ran)")
    axis.set_ylabel("requests / s")
    axis.set_ylim(0, together.budget.rate * 1.4)
    axis.set_title(title)
    axis.legend(loc="upper center", ncol=len(counts) + 1, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
