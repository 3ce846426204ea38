"""Lean and steady, in one table: runs the benchmarks below one after the other, each as
its own process (each starts its own emulator), reads the JSON line each prints last,
and puts every target figure side by side:

  memory.py          peak RSS, 3 models, with pandas installed and hidden (<= 120 MB at
                     200,000 rows installed; largest/smallest <= 1.2)
  budget.py          share of a 600/6s budget over 60 s, Lift Wing latency (>= 99.5%, 0 429s)
  shared_budget.py   2 and 3 processes sharing 300/3s (>= 99%, 0 429s)
  first_request.py   time to first request, 1,000 vs 1,000,000 rows (within 20%), and
                     the largest event-loop stall (asyncio debug mode, > 10 ms logged)
  overhead.py        lwbatch against a bare aiohttp loop (>= 0.5 of its req/s, <= 2x CPU)

    python benchmarks/summary.py             # about 20 minutes
    python benchmarks/summary.py --quick     # smaller inputs and spans
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> dict[str, Any]:
    """Run a benchmark; the JSON object of its last line."""
    done = subprocess.run(
        [sys.executable, str(HERE / script), *args], capture_output=True, text=True, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{script} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = ["20000", "200000"] if args.quick else ["20000", "200000", "1000000"]
    memory = run("memory.py", "--rows", *rows)
    budget = run("budget.py", "--seconds", "30" if args.quick else "60")
    shared = run("shared_budget.py", "--seconds", "10" if args.quick else "20")
    first = run("first_request.py", *(["--large", "200000"] if args.quick else []))
    overhead = run("overhead.py")

    table: list[tuple[str, str, str]] = []
    runs = memory["runs"]
    for mode in ("installed", "hidden"):
        mine = [r for r in runs if r["pandas"] == mode]
        peaks = " / ".join(f"{r['peak_rss_mb']:.0f}" for r in mine)
        sizes = " / ".join(f"{r['rows'] // 1000:,}k" for r in mine)
        imported = any(r["pandas_imported"] for r in mine)
        table.append(
            (
                f"peak RSS, pandas {mode} (MB)",
                f"{peaks} at {sizes} rows; pandas imported: {imported}",
                "<= 120 at 200k, flat" if mode == "installed" else "",
            )
        )
    table.append(
        (
            "budget 600/6s, one process",
            f"{budget['lwbatch_share_of_budget']:.2%}, {budget['lwbatch_429s']} 429s, "
            f"most in a window {budget['lwbatch_max_arrived_in_window']}",
            ">= 99.5%, 0 429s",
        )
    )
    for entry in shared["together"]:
        if entry["shared"]:
            table.append(
                (
                    f"budget 300/3s, {entry['processes']} processes sharing",
                    f"{entry['share_of_budget']:.2%}, {entry['rejected_429']} 429s",
                    ">= 99%, 0 429s",
                )
            )
    times = first["first_request"]
    small, large = sorted(times, key=int)
    table.append(
        (
            "time to first request (s)",
            f"{times[small]['first_request_s']:.2f} at {int(small):,} rows, "
            f"{times[large]['first_request_s']:.2f} at {int(large):,} "
            f"(x{first['first_request_ratio_large_to_small']:.2f})",
            "within 20%",
        )
    )
    table.append(
        (
            "longest task step on the event loop",
            f"{first['largest_task_step_ms']:.1f} ms wall, {first['task_steps_over_10ms']} over "
            f"10 ms; most CPU {first['largest_task_step_cpu_ms']:.1f} ms",
            "<= 10 ms",
        )
    )
    table.append(
        (
            "  same, asyncio debug mode (upper bound)",
            f"{first['debug_mode_largest_stall_ms']:.0f} ms; "
            f"{first['debug_mode_stalls_over_10ms']} over 10 ms",
            "",
        )
    )
    lw, bare = overhead["clients"]["lwbatch"], overhead["clients"]["aiohttp"]
    table.append(
        (
            "req/s vs bare aiohttp",
            f"{lw['req_per_s']:,.0f} vs {bare['req_per_s']:,.0f} "
            f"({overhead['lwbatch_req_per_s_vs_aiohttp']:.2f})",
            ">= 0.5",
        )
    )
    table.append(
        (
            "CPU per request vs bare aiohttp (us)",
            f"{lw['cpu_us_per_req']:.0f} vs {bare['cpu_us_per_req']:.0f} "
            f"(x{overhead['lwbatch_cpu_per_req_vs_aiohttp']:.2f})",
            "<= 2x",
        )
    )
    width = max(len(name) for name, _, _ in table)
    print(f"{'figure':<{width}}  {'measured':<60} target")
    for name, value, target in table:
        print(f"{name:<{width}}  {value:<60} {target}")
    print(
        json.dumps(
            {
                "benchmark": "summary",
                "memory": memory,
                "budget": budget,
                "shared_budget": shared["together"],
                "first_request": first,
                "overhead": overhead,
            }
        )
    )


if __name__ == "__main__":
    main()
