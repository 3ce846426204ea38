"""How long `lwbatch plan` takes on a large input (the issue asks for seconds on a
million rows): rows with a `lang` column over 5 languages, 10% repeated, planned for
`{wiki}-damaging` and revertrisk (batched), in a process of its own.

    python benchmarks/plan.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _common import run_measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    langs = ["en", "de", "fr", "es", "ja"]
    distinct = args.rows - args.rows // 10
    ids = list(range(1, distinct + 1)) + list(range(1, args.rows - distinct + 1))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "revisions.parquet"
        table = pa.table(
            {
                "rev_id": pa.array(ids, pa.int64()),
                "lang": pa.array([langs[i % 5] for i in range(args.rows)]),
            }
        )
        pq.write_table(table, path)
        command = [sys.executable, "-m", "lwbatch", "plan", str(path), "--json"]
        command += ["-m", "{wiki}-damaging", "-m", "revertrisk-language-agnostic"]
        measured = run_measured(command)
    print(f"{'rows':>10} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12}")
    print(
        f"{args.rows:>10,} {measured['seconds']:>8.2f} "
        f"{args.rows / measured['seconds']:>10,.0f} {measured['peak_rss_mb']:>12.1f}"
    )
    print(json.dumps({"benchmark": "plan", "rows": args.rows, **measured}))


if __name__ == "__main__":
    main()
