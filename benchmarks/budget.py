"""Does lwbatch hold a compressed budget to the letter and to the last request?

lwbatch scores revisions against `lwbatch emulate` (its own process, Lift Wing-like
latency, a gateway enforcing the same budget) under `--rate N/PERIOD`. Reported: the
most requests that left lwbatch in any sliding window (exact, from its limiter), the
most that arrived at the emulator in any window, the share of the budget achieved
over the measured span, and the emulator's 429s. Baselines in the same run, driven by
as many waiters: aiolimiter used naively, `AsyncLimiter(N, PERIOD)` (its first window)
and `AsyncLimiter(1, PERIOD/N)` (its sustained rate); and a sequential client, one
request at a time as the `liftwing` package sends them, against the same latency.

    python benchmarks/budget.py --rate 600/6s --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from bisect import bisect_left
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from _common import emulator_process, emulator_stats, max_in_window
from aiolimiter import AsyncLimiter

from lwbatch import Budget, Endpoint, Rate, score_file_async
from lwbatch.settings import Connection, Hooks, Pacing


def share(times: list[float], rate: Rate, seconds: float) -> float:
    """Requests in the first `seconds` of the run over what the budget allows there."""
    return bisect_left(times, times[0] + seconds) / (rate.per_second * seconds)


async def aiolimiter_baseline(limiter: AsyncLimiter, seconds: float, waiters: int) -> list[float]:
    times: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while True:
            async with limiter:
                times.append(time.monotonic())

    tasks = [asyncio.create_task(worker()) for _ in range(waiters)]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    # Seen once: a cancelled aiolimiter waiter never finished; do not wait for it.
    await asyncio.wait(tasks, timeout=5)
    return sorted(t for t in times if t < deadline)


def sequential_baseline(base_url: str, seconds: float) -> int:
    """Requests a one-at-a-time client (like the `liftwing` package) gets out in `seconds`."""
    deadline = time.monotonic() + seconds
    sent = 0
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < deadline:
            client.post(f"{base_url}/v1/models/enwiki-damaging:predict", json={"rev_id": sent + 1})
            sent += 1
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", default="600/6s")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured span")
    parser.add_argument("--latency", default="liftwing")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="fixed in-flight limit (default: adaptive)"
    )
    parser.add_argument(
        "--margin", type=float, default=None, help="Budget.margin in seconds (default: lwbatch's)"
    )
    args = parser.parse_args()
    rate = Rate.parse(args.rate)
    # Enough revisions that the budget, not the input, ends the measured span.
    revisions = int(rate.per_second * (args.seconds + 2 * rate.period)) + 50
    sent: list[float] = []
    gc.collect()
    gc.freeze()  # as the lwbatch CLI does: see lwbatch/cli/scoring.py

    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in.parquet"
        pq.write_table(pa.table({"rev_id": pa.array(range(1, revisions + 1), pa.int64())}), inp)
        with emulator_process("--latency", args.latency, "--rate", args.rate) as base_url:
            report = asyncio.run(
                score_file_async(
                    inp,
                    Path(tmp) / "out.parquet",
                    models=["enwiki-damaging"],
                    rate=Budget(windows=(rate,), margin=args.margin),
                    connection=Connection(endpoint=Endpoint(base_url=base_url)),
                    pacing=Pacing(concurrency=args.concurrency, gc_control=True),
                    hooks=Hooks(on_send=sent.append),
                )
            )
            stats = emulator_stats(base_url, arrivals=True)
    arrivals = sorted(stats["arrivals"])
    rejected = stats["by_status"].get("429", 0)

    naive_window = asyncio.run(
        aiolimiter_baseline(AsyncLimiter(rate.requests, rate.period), rate.period, 256)
    )
    sequential_span = min(args.seconds, 20.0)
    with emulator_process("--latency", args.latency) as base_url:
        sequential = sequential_baseline(base_url, sequential_span)
    naive_pace = asyncio.run(
        aiolimiter_baseline(AsyncLimiter(1, rate.period / rate.requests), args.seconds, 256)
    )
    results = {
        "benchmark": "budget",
        "rate": str(rate),
        "latency": args.latency,
        "revisions": revisions,
        "requests": report.requests_sent,
        "lwbatch_max_sent_in_window": max_in_window(sent, rate.period),
        "lwbatch_max_arrived_in_window": max_in_window(arrivals, rate.period),
        "lwbatch_share_of_budget": round(share(sent, rate, args.seconds), 4),
        "lwbatch_429s": rejected,
        "lwbatch_peak_in_flight": report.peak_in_flight,
        "lwbatch_concurrency": report.concurrency,
        "aiolimiter_N_per_period_first_window": len(naive_window),
        "sequential_share": round(sequential / (rate.per_second * sequential_span), 4),
        "aiolimiter_1_per_interval_share": round(
            len(naive_pace) / (rate.per_second * args.seconds), 4
        ),
    }
    print(
        f"budget {rate}, measured over {args.seconds:g} s, latency {args.latency}, "
        f"{report.requests_sent} requests; emulator 429s: {rejected}\n"
        f"in flight: at most {report.peak_in_flight} (limit {report.limit_at_peak} then); "
        f"at the end {report.concurrency}"
    )
    print(f"{'limiter':<30} {'max in any window':>18} {'share of budget':>16}")
    print(
        f"{'lwbatch (sent)':<30} {results['lwbatch_max_sent_in_window']:>18} "
        f"{results['lwbatch_share_of_budget']:>16.2%}"
    )
    print(f"{'lwbatch (arrived)':<30} {results['lwbatch_max_arrived_in_window']:>18} {'':>16}")
    print(
        f"{f'AsyncLimiter({rate.requests}, {rate.period:g})':<30} "
        f"{results['aiolimiter_N_per_period_first_window']:>18} {'-':>16}"
    )
    print(
        f"{f'AsyncLimiter(1, {rate.period / rate.requests:g})':<30} {'-':>18} "
        f"{results['aiolimiter_1_per_interval_share']:>16.2%}"
    )
    print(f"{'sequential (1 in flight)':<30} {'-':>18} {results['sequential_share']:>16.2%}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
