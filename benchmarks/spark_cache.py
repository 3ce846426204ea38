"""What the score cache costs a Spark job: the driver hands the cache's entries for the
job's models to the tasks as one Parquet file in the progress area, joined to the input
rows by key. Measured: filling a cache of `--entries` answers, exporting the entries of
the job's models to the progress area, and a Spark job (local[2]) over `--rows` of those
revisions with the cache (every answer cached: no request) and without it.

    python benchmarks/spark_cache.py --entries 1000000 --rows 3000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from _common import emulator_process, emulator_stats, spark_session

from lwbatch.cache import SqliteScoreCache
from lwbatch.durability.progress import ProgressArea
from lwbatch.results import Score
from lwbatch.spark.cached import cache_answers

MODEL = "enwiki-damaging"


def fill(path: Path, entries: int) -> float:
    started = time.perf_counter()
    cache = SqliteScoreCache(path)
    score = Score(True, {"true": 0.75, "false": 0.25}, "1")
    for start in range(1, entries + 1, 100_000):
        stop = min(start + 100_000, entries + 1)
        cache.put(MODEL, [("enwiki", rev, score) for rev in range(start, stop)])
    cache.close()
    return time.perf_counter() - started


def export(path: Path, area: Path) -> float:
    started = time.perf_counter()
    cache = SqliteScoreCache(path)
    progress = ProgressArea.at(area)
    progress.prepare("benchmark", 2, restart=True)
    progress.write_cached(cache_answers(cache, {MODEL}))
    cache.close()
    return time.perf_counter() - started


def job(inp: Path, tmp: Path, cache: Path | None, name: str) -> dict[str, Any]:
    from pyspark.sql import SparkSession

    from lwbatch import Endpoint
    from lwbatch.settings import Connection
    from lwbatch.spark import Progress, finish, score

    session = SparkSession.builder.getOrCreate()
    with emulator_process("--latency", "0.02") as url:
        started = time.perf_counter()
        progress = Progress(tmp / f"progress-{name}", cache=cache)
        scored = score(
            session.read.parquet(str(inp)),
            models=[MODEL],
            rate="2000/1s",
            slots=2,
            connection=Connection(endpoint=Endpoint(base_url=url)),
            progress=progress,
        )
        scored.write.parquet(str(tmp / f"out-{name}"))
        finish(progress)
        return {
            "seconds": time.perf_counter() - started,
            "requests": emulator_stats(url)["requests"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=3000)
    args = parser.parse_args()

    session = spark_session("local[2]")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        cache = tmp / "cache.sqlite"
        filled = fill(cache, args.entries)
        exported = export(cache, tmp / "exported")
        inp = tmp / "in.parquet"
        ids = pa.array(range(1, args.rows + 1), pa.int64())
        pq.write_table(pa.table({"wiki_db": ["enwiki"] * args.rows, "rev_id": ids}), inp)
        without = job(inp, tmp, None, "without")
        with_cache = job(inp, tmp, cache, "with")
    session.stop()
    print(f"cache of {args.entries:,} entries; a job of {args.rows:,} rows on local[2]")
    print(f"fill the cache          {filled:8.1f} s")
    print(f"export to the progress  {exported:8.1f} s")
    print(f"{'job':<22} {'seconds':>9} {'requests':>9}")
    for label, result in (("without the cache", without), ("with the cache", with_cache)):
        print(f"{label:<22} {result['seconds']:>9.1f} {result['requests']:>9,}")
    print(
        json.dumps(
            {
                "benchmark": "spark_cache",
                "entries": args.entries,
                "rows": args.rows,
                "fill_seconds": filled,
                "export_seconds": exported,
                "without_cache": without,
                "with_cache": with_cache,
            }
        )
    )


if __name__ == "__main__":
    main()
