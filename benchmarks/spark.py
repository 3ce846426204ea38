"""One job-wide budget on Spark: does a Spark job hold it as the local engine does?

The same input (a data-lake shaped table: `wiki_db`, `revision_id`, three wikis, 10%
repeated rows) is scored with `{wiki}-damaging` under the same compressed budget,
against `lwbatch emulate` in its own process (Lift Wing-like latency, a gateway that
answers 429 over the budget): once by the local engine, once by `lwbatch.spark.score`
on a local SparkSession with as many slots as cores asked. Reported for each: requests
the emulator received, its 429s, the most that arrived in any window, the share of the
budget used between the first and the last arrival, and the wall time (for Spark with
and without the session's start).

    python benchmarks/spark.py --rate 300/3s --rows 3000 --slots 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from _common import emulator_process, emulator_stats, max_in_window

from lwbatch import Budget, Endpoint, Rate, score_file
from lwbatch.settings import Connection

MODELS = ["{wiki}-damaging"]


def lake(path: Path, rows: int, skew: bool = False) -> Path:
    wikis = ("enwiki", "dewiki", "frwiki")
    # Skewed: enwiki holds 80% of the rows, the other two 10% each.
    pick = (lambda i: "enwiki" if i % 10 < 8 else wikis[1 + i % 2]) if skew else None
    distinct = [(pick(i) if pick else wikis[i % 3], 1000 + i) for i in range(rows)]
    keys = distinct + distinct[: rows // 10]
    table = pa.table(
        {
            "wiki_db": [w for w, _ in keys],
            "revision_id": pa.array([r for _, r in keys], pa.int64()),
        }
    )
    pq.write_table(table, path)
    return path


def measured(base_url: str, rate: Rate) -> dict[str, Any]:
    stats = emulator_stats(base_url, arrivals=True)
    arrivals = sorted(stats["arrivals"])
    span = arrivals[-1] - arrivals[0]
    return {
        "requests": stats["requests"],
        "rejected_429": stats["by_status"].get("429", 0),
        "max_in_window": max_in_window(arrivals, rate.period),
        "budget_used": (len(arrivals) - 1) / (rate.per_second * span) if span else 0.0,
    }


def tasks_phase(base_url: str, rate: Rate, counted: Any) -> dict[str, Any]:
    """The share of the budget from the tasks' first request to their last: the
    driver's pre-flight requests before them count in (the tasks' shares are charged
    for them), the time from the pre-flight to the tasks' start does not."""
    sending = counted.sending() if hasattr(counted, "sending") else None
    if sending is None:
        return {"tasks_budget_used": None}
    arrivals = sorted(emulator_stats(base_url, arrivals=True)["arrivals"])
    # The emulator's clock is this machine's monotonic one; the tasks' times are wall.
    first, last = (t + time.monotonic() - time.time() for t in sending)
    during = [t for t in arrivals if t >= first - 0.05]
    preflight = len(arrivals) - len(during)
    span = last - first
    used = (len(during) + preflight - 1) / (rate.per_second * span) if span else 0.0
    return {"tasks_budget_used": used, "preflight_requests": preflight}


def local_run(inp: Path, out: Path, rate: Rate, latency: str) -> dict[str, Any]:
    with emulator_process(
        "--latency", latency, "--rate", f"{rate.requests}/{rate.period:g}s"
    ) as url:
        started = time.perf_counter()
        score_file(
            inp,
            out,
            models=MODELS,
            wiki_column="wiki_db",
            id_column="revision_id",
            rate=Budget.from_rate(rate),
            connection=Connection(endpoint=Endpoint(base_url=url)),
        )
        result = {"seconds": time.perf_counter() - started, **measured(url, rate)}
    return result


def spark_run(inp: Path, out: Path, rate: Rate, latency: str, slots: int) -> dict[str, Any]:
    from pyspark.sql import SparkSession

    from lwbatch import spark as lwspark
    from lwbatch.spark import score

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    started = time.perf_counter()
    session = (
        SparkSession.builder.master(f"local[{slots}]")
        .appName("lwbatch-benchmark")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    session_start = time.perf_counter() - started
    try:
        with emulator_process(
            "--latency", latency, "--rate", f"{rate.requests}/{rate.period:g}s"
        ) as url:
            started = time.perf_counter()
            counted = lwspark.counters(session)
            scored = score(
                session.read.parquet(str(inp)),
                models=MODELS,
                rate=Budget.from_rate(rate),
                wiki_column="wiki_db",
                id_column="revision_id",
                slots=slots,
                connection=Connection(endpoint=Endpoint(base_url=url)),
                counters=counted,
            )
            scored.write.parquet(str(out))
            result = {
                "seconds": time.perf_counter() - started,
                "session_start_seconds": session_start,
                **measured(url, rate),
                **tasks_phase(url, rate, counted),
            }
    finally:
        session.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="300/3s")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--latency", default="liftwing")
    parser.add_argument(
        "--skew", action="store_true", help="one wiki holds 80%% of the rows (10%% the others)"
    )
    args = parser.parse_args()
    rate = Rate.parse(args.rate)
    with tempfile.TemporaryDirectory() as tmp:
        inp = lake(Path(tmp) / "lake.parquet", args.rows, args.skew)
        local = local_run(inp, Path(tmp) / "local.parquet", rate, args.latency)
        spark = spark_run(inp, Path(tmp) / "spark", rate, args.latency, args.slots)
        same = sorted(pq.read_table(Path(tmp) / "local.parquet").to_pylist(), key=str) == sorted(
            pq.read_table(Path(tmp) / "spark").to_pylist(), key=str
        )
    shape = "80% one wiki" if args.skew else "3 wikis alike"
    print(
        f"{args.rows:,} distinct revisions (+10% repeats, {shape}), {args.rate}, {args.slots} slots"
    )
    print(
        f"{'engine':<8} {'requests':>9} {'429s':>5} {'max/window':>11} {'budget used':>12} "
        f"{'tasks phase':>12} {'s':>7}"
    )
    for name, result in (("local", local), ("spark", spark)):
        phase = result.get("tasks_budget_used")
        print(
            f"{name:<8} {result['requests']:>9} {result['rejected_429']:>5} "
            f"{result['max_in_window']:>11} {result['budget_used']:>12.2%} "
            f"{'-' if phase is None else f'{phase:.2%}':>12} {result['seconds']:>7.1f}"
        )
    print(f"spark session start: {spark['session_start_seconds']:.1f} s; same rows: {same}")
    print(
        json.dumps(
            {
                "benchmark": "spark",
                "rate": args.rate,
                "rows": args.rows,
                "slots": args.slots,
                "skew": args.skew,
                "local": local,
                "spark": spark,
                "same_rows": same,
            }
        )
    )


if __name__ == "__main__":
    main()
