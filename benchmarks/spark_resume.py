"""What a Spark job that fails part way costs: requests needed against requests sent.

1. Kill and rerun: `lwbatch score --engine spark` on local[2], its process group
   killed with SIGKILL once it has sent `--kill-after` requests, then the same command
   run again to its end.
2. A retried task: `lwbatch.spark.score` with a task that fails once (partition 0's
   first attempt, after 200 rows), retried by Spark (local[2,2]); with a progress area
   where this lwbatch has one.

Needed is rows x models (the models ask one revision per request). Against `lwbatch
emulate` in its own process (20 ms latency).

    python benchmarks/spark_resume.py --rows 1500 --rate 100/1s --kill-after 900
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from _common import emulator_process, emulator_stats, spark_session

MODELS = ["{wiki}-damaging", "{wiki}-goodfaith"]


def lake(path: Path, rows: int) -> Path:
    wikis = ("enwiki", "dewiki", "frwiki")
    table = pa.table(
        {
            "wiki_db": [wikis[i % 3] for i in range(rows)],
            "revision_id": pa.array([1000 + i // 3 for i in range(rows)], pa.int64()),
        }
    )
    pq.write_table(table, path)
    return path


def requests(url: str) -> int:
    return int(emulator_stats(url)["requests"])


def kill_and_rerun(inp: Path, out: Path, rate: str, kill_after: int) -> dict[str, Any]:
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    with emulator_process("--latency", "0.02") as url:
        command = [str(Path(sys.executable).parent / "lwbatch"), "score", str(inp), "-o", str(out)]
        command += ["--engine", "spark", "--master", "local[2]", "--rate", rate, "-q"]
        command += ["--wiki-column", "wiki_db", "--id-column", "revision_id", "--endpoint", url]
        command += [arg for m in MODELS for arg in ("-m", m)]
        driver = subprocess.Popen(
            command, env=env, start_new_session=True, stderr=subprocess.DEVNULL
        )
        while requests(url) < kill_after:
            if driver.poll() is not None:
                raise SystemExit("the job ended before the kill: raise --rows")
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        at_kill = requests(url)
        subprocess.run(command, env=env, check=True, stderr=subprocess.DEVNULL)
        return {"sent_before_kill": at_kill, "sent": requests(url)}


def retried_task(inp: Path, progress: Path) -> dict[str, Any]:

    from lwbatch import Endpoint
    from lwbatch.settings import Connection, Pacing
    from lwbatch.spark import score

    session = spark_session("local[2,2]")

    def fail_once(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        context = TaskContext.get()
        failing = context is not None and context.partitionId() == 0
        failing = failing and context is not None and context.attemptNumber() == 0
        seen = 0
        for batch in batches:
            seen += batch.num_rows
            if failing and seen >= 200:
                raise RuntimeError("injected: the executor was lost")
            yield batch

    kept = {"progress": str(progress)} if "progress" in inspect.signature(score).parameters else {}
    try:
        with emulator_process("--latency", "0.02") as url:
            scored = score(
                session.read.parquet(str(inp)),
                models=MODELS,
                rate="2000/1s",
                slots=2,
                wiki_column="wiki_db",
                id_column="revision_id",
                connection=Connection(endpoint=Endpoint(base_url=url)),
                pacing=Pacing(concurrency=4, share=False),
                **kept,
            )
            rows = scored.mapInArrow(fail_once, scored.schema).count()
            return {"rows": rows, "sent": requests(url), "progress": bool(kept)}
    finally:
        session.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--rate", default="100/1s")
    parser.add_argument("--kill-after", type=int, default=900)
    args = parser.parse_args()
    needed = args.rows * len(MODELS)
    with tempfile.TemporaryDirectory() as tmp:
        inp = lake(Path(tmp) / "lake.parquet", args.rows)
        killed = kill_and_rerun(inp, Path(tmp) / "scores", args.rate, args.kill_after)
        retried = retried_task(inp, Path(tmp) / "progress")
    print(f"{args.rows:,} rows x {len(MODELS)} models = {needed:,} requests needed")
    print(f"{'case':<34} {'needed':>8} {'sent':>8} {'paid again':>11}")
    cases = (
        (f"kill at {killed['sent_before_kill']:,} sent, rerun ({args.rate})", killed["sent"]),
        ("task fails once, Spark retries it", retried["sent"]),
    )
    for name, sent in cases:
        print(f"{name:<34} {needed:>8,} {sent:>8,} {sent - needed:>11,}")
    print(
        json.dumps(
            {
                "benchmark": "spark_resume",
                "rows": args.rows,
                "needed": needed,
                "kill_and_rerun": killed,
                "retried_task": retried,
            }
        )
    )


if __name__ == "__main__":
    main()
