"""How soon does `lwbatch score` send its first request, and how long does lwbatch ever
hold the event loop?

1. Time to first request: from starting the command (Popen) to the emulator's first
   arrival (both on CLOCK_MONOTONIC), for a 1,000-row and a 1,000,000-row input; and when
   the estimate line ("the whole input: ...") appeared. Each size runs three times,
   alternating (a lone start varies by 30% here); the median run counts. The target:
   the same time (within 20%) for both sizes.
2. Loop stalls: a fresh run is stopped with SIGTERM part-way, then resumed (journal
   read back, grant stamps restored, estimate, fold into the output), twice:
   - on a normal loop whose task factory times every task step (all of lwbatch's code
     on the loop runs in tasks): wall time and the thread's CPU time of each step. The
     wall time also counts waits for the GIL held by a worker thread and the kernel
     running another process (the emulator shares the 2 cores); CPU time is what the
     step itself did. The target (10 ms) is for the wall time;
   - under asyncio's debug mode with ``slow_callback_duration = 0.01``, which logs
     every callback or task step over 10 ms ("Executing ... took N seconds") and names
     it. Debug mode records a stack for every handle and future it creates, inside the
     callbacks it times, so its figures are upper bounds.

    python benchmarks/first_request.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _common import emulator_process, emulator_stats

MODEL = "enwiki-damaging"

# The child: lwbatch's console entry on an event loop in debug mode (10 ms threshold).
_DEBUG_LOOP = """
import asyncio, sys
class Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        loop = super().new_event_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = 0.01
        return loop
asyncio.set_event_loop_policy(Policy())
sys.argv = ["lwbatch", *sys.argv[1:]]
try:
    from lwbatch.cli import console
except ImportError:  # lwbatch before 0.3, for before/after runs
    from lwbatch.cli import main
    console = lambda: sys.exit(main())
console()
"""
# The child on a normal loop: every task step timed (wall, thread CPU); the slowest
# steps go to the JSON file named by the environment at exit.
_TIMED_STEPS = """
import asyncio, atexit, collections.abc, json, os, sys, time
steps = []
over = [0]
class Timed(collections.abc.Coroutine):
    def __init__(self, coro):
        self.coro = coro
    def _step(self, method, *args):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return method(*args)
        finally:
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            over[0] += wall > 0.01
            if wall > 0.002:
                steps.append((wall, cpu, getattr(self.coro, "__qualname__", "?")))
                if len(steps) > 1000:
                    steps.sort(reverse=True)
                    del steps[20:]
    def send(self, value):
        return self._step(self.coro.send, value)
    def throw(self, *args):
        return self._step(self.coro.throw, *args)
    def close(self):
        return self.coro.close()
    def __await__(self):
        return self.coro.__await__()
class Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        loop = super().new_event_loop()
        loop.set_task_factory(lambda loop, coro, **kw: asyncio.Task(Timed(coro), loop=loop, **kw))
        return loop
asyncio.set_event_loop_policy(Policy())
def save():
    with open(os.environ["STEPS_JSON"], "w") as f:
        json.dump({"slowest": sorted(steps, reverse=True)[:20], "over_10ms": over[0]}, f)
atexit.register(save)
sys.argv = ["lwbatch", *sys.argv[1:]]
from lwbatch.cli import console
console()
"""
_SLOW = re.compile(r"Executing (.+?) took (\d+\.\d+) seconds")


def write_input(path: Path, rows: int) -> None:
    with pq.ParquetWriter(path, pa.schema([("rev_id", pa.int64())])) as writer:
        for start in range(0, rows, 100_000):
            ids = pa.array(range(start + 1, min(start + 100_000, rows) + 1), pa.int64())
            writer.write_table(pa.table({"rev_id": ids}))


def _command(url: str, inp: Path, out: Path, *extra: str) -> list[str]:
    return ["score", str(inp), "-o", str(out), "-m", MODEL, "--endpoint", url,
            "--rate", "unlimited", *extra]  # fmt: skip


def first_request(url: str, inp: Path, out: Path) -> dict[str, float]:
    """Seconds from start to the first request and to the estimate line."""
    before = emulator_stats(url)["requests"]
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lwbatch", *_command(url, inp, out, "--restart")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    estimate_at: list[float] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "the whole input:" in line:
                estimate_at.append(time.monotonic() - started)

    reader = threading.Thread(target=read)
    reader.start()
    # Stop it once it has sent and said its estimate (or ended by itself).
    while proc.poll() is None and not (estimate_at and emulator_stats(url)["requests"] > before):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    reader.join()
    stats = emulator_stats(url, arrivals=True)
    arrivals = stats["arrivals"][before:]
    return {
        "first_request_s": round(arrivals[0] - started, 3),
        "estimate_line_s": round(estimate_at[0], 3) if estimate_at else float("nan"),
    }


def steps(
    command: list[str], *, stop_after: int | None, url: str
) -> tuple[list[tuple[float, float]], int]:
    """(wall, CPU) seconds of the slowest task steps while `command` ran, and how many
    steps took over 10 ms."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "steps.json"
        _run(_TIMED_STEPS, command, stop_after, url, env={"STEPS_JSON": str(report)})
        found = json.loads(report.read_text())
        return [(wall, cpu) for wall, cpu, _ in found["slowest"]], found["over_10ms"]


def stalls(command: list[str], *, stop_after: int | None, url: str) -> list[tuple[float, str]]:
    """The slow callbacks asyncio logged while `command` ran (stopped after N requests)."""
    err = _run(_DEBUG_LOOP, command, stop_after, url)
    found = [(float(m.group(2)), m.group(1)) for m in _SLOW.finditer(err)]
    return sorted(found, reverse=True)


def _run(
    child: str,
    command: list[str],
    stop_after: int | None,
    url: str,
    env: dict[str, str] | None = None,
) -> str:
    """Run `child` with `command`, stopped with SIGTERM after N requests; its stderr."""
    before = emulator_stats(url)["requests"]
    proc = subprocess.Popen(
        [sys.executable, "-c", child, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if stop_after is not None:
        while emulator_stats(url)["requests"] - before < stop_after:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    return err


def _short(callback: str) -> str:
    task = re.search(r"coro=<([\w.]+)\(\)", callback)
    if task:
        return f"task step of {task.group(1)}()"
    handle = re.search(r"<(?:Timer)?Handle ([\w.<>]+)", callback)
    return handle.group(1) if handle else callback[:60]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--stall-rows", type=int, default=40_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, emulator_process("--latency", "0") as url:
        first: dict[int, dict[str, float]] = {}
        for rows in (args.small, args.large):
            write_input(Path(tmp) / f"in-{rows}.parquet", rows)
        # Each size three times, alternating; the median run of each (by first request).
        runs: dict[int, list[dict[str, float]]] = {args.small: [], args.large: []}
        for _ in range(3):
            for rows, found in runs.items():
                inp, out = Path(tmp) / f"in-{rows}.parquet", Path(tmp) / f"out-{rows}.parquet"
                found.append(first_request(url, inp, out))
        for rows, found in runs.items():
            first[rows] = sorted(found, key=lambda run: run["first_request_s"])[1]
        inp = Path(tmp) / "stalls.parquet"
        write_input(inp, args.stall_rows)
        out = Path(tmp) / "stalls-out.parquet"
        half = args.stall_rows // 2
        timed, over = steps(_command(url, inp, out, "--restart"), stop_after=half, url=url)
        more, over_too = steps(_command(url, inp, out), stop_after=None, url=url)
        timed = sorted(timed + more, reverse=True)
        over += over_too
        fresh = stalls(_command(url, inp, out, "--restart"), stop_after=half, url=url)
        resumed = stalls(_command(url, inp, out), stop_after=None, url=url)

    small, large = first[args.small], first[args.large]
    ratio = large["first_request_s"] / small["first_request_s"]
    print("time from the command's start to its first request (emulator answering at once)")
    print(f"{'input rows':>12} {'first request s':>16} {'estimate line s':>16}")
    for rows, row in first.items():
        print(f"{rows:>12,} {row['first_request_s']:>16.3f} {row['estimate_line_s']:>16.3f}")
    print(f"large / small: {ratio:.2f}")
    wall, cpu = timed[0] if timed else (0.0, 0.0)
    most_cpu = max((c for _, c in timed), default=0.0)
    print(f"\nlongest task steps, normal loop, {args.stall_rows:,} rows stopped and resumed:")
    print(
        f"  longest: {wall * 1000:.1f} ms wall ({cpu * 1000:.1f} ms CPU); most CPU in one step:"
        f" {most_cpu * 1000:.1f} ms; steps over 10 ms: {over}"
    )
    print(f"\nevent loop held > 10 ms (asyncio debug mode), {args.stall_rows:,} rows:")
    for name, found in (("fresh run, stopped", fresh), ("resumed to the end", resumed)):
        worst = f"{found[0][0] * 1000:.0f} ms" if found else "none"
        print(f"  {name}: {len(found)} stalls, largest {worst}")
        for seconds, callback in found[:5]:
            print(f"    {seconds * 1000:6.0f} ms  {_short(callback)}")
    every = fresh + resumed
    print(
        json.dumps(
            {
                "benchmark": "first_request",
                "first_request": {str(k): v for k, v in first.items()},
                "first_request_ratio_large_to_small": round(ratio, 3),
                "largest_task_step_ms": round(wall * 1000, 1),
                "largest_task_step_cpu_ms": round(most_cpu * 1000, 1),
                "task_steps_over_10ms": over,
                "debug_mode_stalls_over_10ms": len(every),
                "debug_mode_largest_stall_ms": round(
                    max((s for s, _ in every), default=0.0) * 1000, 1
                ),
                "stalls": [
                    {"run": run, "ms": round(s * 1000, 1), "callback": _short(c)}
                    for run, found in (("fresh", fresh), ("resumed", resumed))
                    for s, c in found[:10]
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
