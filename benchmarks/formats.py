"""What each output format costs to write: the same merged rows (with a wiki column, two
models, latency and attempts) folded into every sink the way a run's end does, segment
by segment, then committed. Time per million rows and the bytes on disk (the JSON and
long formats include their hidden Parquet copy), each in a process of its own so that
peak memory is the sink's.

    python benchmarks/formats.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMATS = ("parquet", "long", "jsonl", "ores-json")
SEGMENT = 16_384


def write_one(fmt: str, rows: int, folder: Path) -> dict[str, float]:
    from lwbatch.io.rows import RowBuffer
    from lwbatch.io.sinks import for_rows, open_sink
    from lwbatch.keys import KeyLayout, RowKey
    from lwbatch.protocol.catalog import default_catalog
    from lwbatch.results import Score, ScoredRow

    specs = default_catalog().resolve_all(["{wiki}-damaging", "revertrisk-language-agnostic"])
    names = {"parquet": "o.parquet", "long": "o.long", "jsonl": "o.jsonl", "ores-json": "o.json"}
    out = folder / names[fmt]
    sink = for_rows(open_sink(out, format=fmt, specs=specs))
    buffer = RowBuffer(specs, KeyLayout("wiki_db"), detail=True)
    wikis = ["enwiki", "dewiki", "frwiki", "eswiki", "jawiki"]
    segments = []
    for start in range(0, rows, SEGMENT):
        for i in range(start, min(start + SEGMENT, rows)):
            p = (i * 7919 % 10_000) / 10_000
            score = Score(
                prediction=p > 0.5,
                probability={"false": round(1 - p, 4), "true": p},
                model_version="0.5.1",
                latency_ms=412.5,
                attempts=1,
            )
            key = RowKey(wikis[i % 5], i + 1)
            buffer.add(ScoredRow(key, {s.name: score for s in specs}))
        segments.append(buffer.take()[0])
    # Only the sink is timed: the rows are what a journal's segments hold.
    started = time.perf_counter()
    sink.open(buffer.schema)
    for table in segments:
        sink.write(table)
    sink.commit({})
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return {
        "seconds": seconds,
        "bytes": size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--one", choices=FORMATS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(write_one(args.one, args.rows, Path(tmp))))
        return
    results = {}
    for fmt in FORMATS:
        done = subprocess.run(
            [sys.executable, __file__, "--rows", str(args.rows), "--one", fmt],
            capture_output=True,
            text=True,
            check=True,
        )
        results[fmt] = json.loads(done.stdout)
    base = results["parquet"]["seconds"]
    header = f"{'format':<10} {'s per 1M rows':>14} {'x parquet':>10} {'MB on disk':>11}"
    print(f"{header} {'peak RSS MB':>12}")
    for fmt, r in results.items():
        per_million = r["seconds"] * 1_000_000 / args.rows
        print(
            f"{fmt:<10} {per_million:>14.1f} {r['seconds'] / base:>10.2f} "
            f"{r['bytes'] / 1e6:>11.1f} {r['peak_rss_mb']:>12.0f}"
        )
    print(json.dumps({"rows": args.rows, "formats": results}))


if __name__ == "__main__":
    main()
