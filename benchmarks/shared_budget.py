"""What sharing one budget between processes costs, and what it gives.

1. The limiter alone: CPU per grant, with a budget of its own and with the shared
   ledger (one flock round trip and a few reads of the mapped file per grant); then
   two processes at 50/s each for 10 s, each with a budget of its own (150/3s) or
   taking turns on one shared budget (300/3s): the turns' cost per grant.
2. One process, with and without the shared ledger, at the enterprise tier's rate
   (55.6/s, its hour compressed 360x) and at 400/s (1200/3s): throughput and the CPU
   per request of the whole client (run-to-run noise here is about 10%).
3. Two and three processes of one identity at once (`lwbatch bench --processes N`),
   sharing and not: share of the budget together, each one's part, 429s, the busiest
   window, CPU per request.

Each figure is one run on this machine; compare rows of one run, not runs.

    python benchmarks/shared_budget.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from _common import emulator_process

from lwbatch import Budget, Endpoint, Rate, Tier
from lwbatch.cli.bench import BenchResult, compressed, run_bench
from lwbatch.pacing.limiter import BudgetLimiter
from lwbatch.pacing.shared import SharedLedger
from lwbatch.settings import Connection, Pacing

MODELS = ["enwiki-damaging", "enwiki-goodfaith"]


def grant_cost(*, share: bool, grants: int = 200_000) -> float:
    """Microseconds of CPU per grant of a limiter whose budget never makes it wait."""
    budget = Budget.from_rate(Rate(200_000, 0.001))

    async def grant_all(limiter: BudgetLimiter) -> float:
        started = time.process_time()
        for _ in range(grants):
            await limiter.acquire()
        return (time.process_time() - started) / grants * 1e6

    with tempfile.TemporaryDirectory() as state:
        ledger = SharedLedger.open(budget, "benchmark", state_dir=state) if share else None
        try:
            return anyio.run(grant_all, BudgetLimiter(budget, ledger=ledger))
        finally:
            if ledger is not None:
                ledger.close()


def turns_child(state: str, shared: bool) -> None:
    """One of two processes granting for 10 s; prints its CPU per grant (us)."""
    budget = Budget.from_rate(Rate(300, 3.0) if shared else Rate(150, 3.0))

    async def grant_for(seconds: float) -> None:
        ledger = SharedLedger.open(budget, "benchmark", state_dir=state) if shared else None
        limiter = BudgetLimiter(budget, ledger=ledger)
        end, granted = time.monotonic() + seconds, [0]
        started = time.process_time()

        async def worker() -> None:
            while time.monotonic() < end:
                await limiter.acquire()
                granted[0] += 1

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(worker)
        print((time.process_time() - started) / granted[0] * 1e6, flush=True)
        if ledger is not None:
            ledger.close()

    anyio.run(grant_for, 10.0)


def turns_cost(*, shared: bool) -> list[float]:
    with tempfile.TemporaryDirectory() as state:
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--turns-child", state, "1" if shared else "0"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        return [float(proc.communicate()[0]) for proc in procs]


def one_process(budget: Budget, seconds: float, *, share: bool) -> BenchResult:
    gateway = str(budget.windows[0])
    with (
        emulator_process("--latency", "0.05", "--rate", gateway) as url,
        tempfile.TemporaryDirectory() as state,
    ):
        return anyio.run(
            lambda: run_bench(
                budget=budget,
                seconds=seconds,
                models=MODELS,
                connection=Connection(endpoint=Endpoint(base_url=url)),
                pacing=Pacing(share=share, state_dir=Path(state) if share else None),
            )
        )


def processes(count: int, rate: str, seconds: float, *, share: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        figures = Path(folder) / "together.json"
        command = [sys.executable, "-m", "lwbatch", "bench", "--rate", rate, "--latency", "0.05"]
        command += ["--seconds", str(seconds), "--processes", str(count), "--no-chart"]
        command += ["--json", str(figures), *(() if share else ("--no-shared-budget",))]
        command += [arg for model in MODELS for arg in ("-m", model)]
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
        data: dict[str, Any] = json.loads(figures.read_text())
        return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--turns-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.turns_child:
        turns_child(args.turns_child[0], args.turns_child[1] == "1")
        return

    grant = {"own": grant_cost(share=False), "shared": grant_cost(share=True)}
    print(f"limiter CPU per grant: {grant['own']:.2f} us own, {grant['shared']:.2f} us shared")
    turns = {"own": turns_cost(shared=False), "shared": turns_cost(shared=True)}
    print(
        "two processes at 50/s, limiter CPU per grant: "
        + ", ".join(f"{k} {' / '.join(f'{v:.0f}' for v in vs)} us" for k, vs in turns.items())
    )
    print()
    single = []
    print(f"{'budget':<24} {'ledger':<7} {'achieved/s':>10} {'of budget':>9} {'CPU/request':>12}")
    for name, budget in (
        ("enterprise (55.6/s)", compressed(Tier.ENTERPRISE, 360)),
        ("400/s", Budget.from_rate(Rate(1200, 3.0))),
    ):
        for share in (False, True):
            result = one_process(budget, args.seconds, share=share)
            row = {
                "budget": name,
                "shared": share,
                "achieved_rate": round(result.achieved_rate, 2),
                "share_of_budget": round(result.share, 4),
                "rejected_429": result.rejected,
                "cpu_ms_per_request": round(1000 * result.cpu_per_request, 4),
            }
            single.append(row)
            print(
                f"{name:<24} {'shared' if share else 'own':<7} {result.achieved_rate:>10.2f} "
                f"{result.share:>9.2%} {1000 * result.cpu_per_request:>9.3f} ms"
            )

    together = []
    print()
    print(f"{'processes':<10} {'ledger':<7} {'of budget':>9} {'429s':>5} {'busiest 300/3s':>15} "
          f"{'parts':<22} {'CPU/request (ms)':<20}")  # fmt: skip
    for count in (2, 3):
        for share in (True, False):
            data = processes(count, "300/3s", args.seconds, share=share)
            parts = [p["share"] for p in data["per_process"]]
            cpu = [p["cpu_ms_per_request"] for p in data["per_process"]]
            together.append({"processes": count, "shared": share, **data})
            print(
                f"{count:<10} {'shared' if share else 'own':<7} {data['share_of_budget']:>9.2%} "
                f"{data['rejected_429']:>5} {data['busiest_windows'][0]['most']:>15} "
                f"{' / '.join(f'{p:.1%}' for p in parts):<22} "
                f"{' / '.join(f'{c:.2f}' for c in cpu):<20}"
            )
    print(
        json.dumps(
            {
                "benchmark": "shared_budget",
                "seconds": args.seconds,
                "grant_cpu_us": {k: round(v, 2) for k, v in grant.items()},
                "two_processes_grant_cpu_us": {
                    k: [round(v, 1) for v in vs] for k, vs in turns.items()
                },
                "single": single,
                "together": together,
            }
        )
    )


if __name__ == "__main__":
    main()
