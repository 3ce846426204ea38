"""Does lwbatch's memory stay flat as the input grows?

`lwbatch score` (a process of its own; journal on, as users run it) scores inputs of
growing size against the emulator answering at once, with the budget off. The kernel
reports each run's peak RSS (wait4). Target: the peak at the largest input is at most
1.2x the peak at the smallest and under 200 MB. revertrisk-language-agnostic batches 20
revisions per request, so a million rows take 50,000 requests (--model changes it).

    python benchmarks/memory.py --rows 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _common import emulator_process, run_measured


def write_input(path: Path, rows: int) -> None:
    """`rows` rev_ids, 10% of them repeated, written in row groups as a dump would be."""
    with pq.ParquetWriter(path, pa.schema([("rev_id", pa.int64())])) as writer:
        for start in range(0, rows, 100_000):
            stop = min(start + 100_000, rows)
            ids = pa.array([1 + (i if i % 10 else i // 2) for i in range(start, stop)], pa.int64())
            writer.write_table(pa.table({"rev_id": ids}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--model", default="revertrisk-language-agnostic")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp, emulator_process("--latency", "0") as url:
        for rows in args.rows:
            inp = Path(tmp) / f"in-{rows}.parquet"
            out = Path(tmp) / f"out-{rows}.parquet"
            write_input(inp, rows)
            measured = run_measured(
                [
                    sys.executable,
                    "-m",
                    "lwbatch",
                    "score",
                    str(inp),
                    "-o",
                    str(out),
                    "-m",
                    args.model,
                    "--base-url",
                    url,
                    "--rate",
                    "unlimited",
                    "-q",
                ]  # fmt: skip
            )
            written = pq.ParquetFile(out).metadata.num_rows
            results.append(
                {
                    "rows": rows,
                    "rows_written": written,
                    "seconds": round(measured["seconds"], 1),
                    "peak_rss_mb": round(measured["peak_rss_mb"], 1),
                }
            )
    base = results[0]["peak_rss_mb"]
    print(f"lwbatch score with {args.model}, budget off, emulator answering at once")
    print(
        f"{'input rows':>12} {'rows written':>13} {'seconds':>8} {'peak RSS MB':>12} {'ratio':>6}"
    )
    for row in results:
        print(
            f"{row['rows']:>12,} {row['rows_written']:>13,} {row['seconds']:>8.1f} "
            f"{row['peak_rss_mb']:>12.1f} {row['peak_rss_mb'] / base:>6.2f}"
        )
    print(
        json.dumps(
            {
                "benchmark": "memory",
                "model": args.model,
                "runs": results,
                "peak_ratio_largest_to_smallest": round(results[-1]["peak_rss_mb"] / base, 3),
                "peak_rss_mb_max": max(r["peak_rss_mb"] for r in results),
            }
        )
    )


if __name__ == "__main__":
    main()
