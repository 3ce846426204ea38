"""Does lwbatch's memory stay flat as the input grows, with pandas installed or not?

`lwbatch score` (a process of its own; journal on, as users run it) scores inputs of
growing size against the emulator answering at once, with the budget off. The kernel
reports each run's peak RSS (wait4). Each size runs twice: as installed (pandas too, as
in every data user's environment) and with pandas hidden from the process; the child
also says whether pandas was imported. Targets: at most 120 MB at 200,000 rows x 3
models with pandas installed, and flat (largest/smallest <= 1.2) from 20,000 to
1,000,000 rows.

    python benchmarks/memory.py --rows 20000 200000 1000000
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

# The child: lwbatch's console entry, optionally with pandas unimportable; at exit it
# writes whether pandas was loaded.
_CHILD = """
import atexit, sys
hide, report = sys.argv[1] == "hidden", sys.argv[2]
class Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pandas":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
if hide:
    sys.meta_path.insert(0, Hidden())
def said():
    with open(report, "w") as f:
        f.write("yes" if sys.modules.get("pandas") else "no")
atexit.register(said)
from lwbatch.cli import console
sys.argv[1:] = sys.argv[3:]
console()
"""
MODELS = ("enwiki-damaging", "enwiki-goodfaith", "enwiki-articlequality")


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
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000, 1_000_000])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--pandas", choices=["installed", "hidden", "both"], default="both")
    args = parser.parse_args()
    modes = ["installed", "hidden"] if args.pandas == "both" else [args.pandas]
    results = []
    with tempfile.TemporaryDirectory() as tmp, emulator_process("--latency", "0") as url:
        for rows in args.rows:
            inp = Path(tmp) / f"in-{rows}.parquet"
            write_input(inp, rows)
            for mode in modes:
                out = Path(tmp) / f"out-{rows}-{mode}.parquet"
                report = Path(tmp) / "pandas"
                models = [a for m in args.models for a in ("-m", m)]
                measured = run_measured(
                    [
                        sys.executable,
                        "-c",
                        _CHILD,
                        mode,
                        str(report),
                        "score",
                        str(inp),
                        "-o",
                        str(out),
                        *models,
                        "--endpoint",
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
                        "pandas": mode,
                        "pandas_imported": report.read_text() == "yes",
                        "rows_written": written,
                        "seconds": round(measured["seconds"], 1),
                        "peak_rss_mb": round(measured["peak_rss_mb"], 1),
                    }
                )
    print(f"lwbatch score with {', '.join(args.models)}; budget off, emulator answering at once")
    print(
        f"{'input rows':>12} {'pandas':>10} {'imported':>9} {'rows written':>13} "
        f"{'seconds':>8} {'peak RSS MB':>12} {'vs smallest':>12}"
    )
    for row in results:
        base = next(r for r in results if r["pandas"] == row["pandas"])["peak_rss_mb"]
        print(
            f"{row['rows']:>12,} {row['pandas']:>10} {str(row['pandas_imported']):>9} "
            f"{row['rows_written']:>13,} {row['seconds']:>8.1f} {row['peak_rss_mb']:>12.1f} "
            f"{row['peak_rss_mb'] / base:>12.2f}"
        )
    summary: dict[str, object] = {"benchmark": "memory", "models": args.models, "runs": results}
    for mode in modes:
        runs = [r for r in results if r["pandas"] == mode]
        summary[f"peak_rss_mb_max_pandas_{mode}"] = max(r["peak_rss_mb"] for r in runs)
        summary[f"peak_ratio_largest_to_smallest_pandas_{mode}"] = round(
            runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
