"""How many requests does lwbatch save? Lift Wing has no cache: every request costs budget.

Input: 100,000 rows in five languages, 30% of them repeats of earlier rev_ids. Models:
revertrisk-language-agnostic (which takes batches of up to 20 revisions of one
language) and two revscoring models, each row's own wiki's (one revision per request).
Compared in one run:

  naive       one request per input row and model (a loop over the file)
  dedup       one request per distinct revision and model (what ORES-era scripts did)
  lwbatch     requests lwbatch sent (dedup, plus same-language revertrisk batches;
              partial batches leave after a short linger)

Target: revertrisk costs at most 1/15 request per revision.

    python benchmarks/requests_saved.py --rows 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _common import emulator_process, emulator_stats

from lwbatch import Budget, Endpoint, score_file_async
from lwbatch.settings import Connection

# Each row's own wiki's damaging and goodfaith models (one per wiki, behind one column).
MODELS = ["revertrisk-language-agnostic", "{wiki}-damaging", "{wiki}-goodfaith"]
LANGS = ["en", "de", "fr", "es", "ja"]


def make_input(path: Path, rows: int, duplicates: float, seed: int = 7) -> int:
    rng = random.Random(seed)
    distinct = round(rows * (1 - duplicates))
    ids = list(range(10_000_000, 10_000_000 + distinct))
    ids += [rng.choice(ids) for _ in range(rows - distinct)]
    rng.shuffle(ids)
    langs = [LANGS[rev % len(LANGS)] for rev in ids]  # a revision has one wiki
    pq.write_table(
        pa.table({"rev_id": pa.array(ids, pa.int64()), "lang": pa.array(langs, pa.string())}),
        path,
    )
    return distinct


def columns(by_model: dict[str, int]) -> dict[str, int]:
    """Requests per output column: a `{wiki}-KIND` column sums its wikis' models."""
    out: dict[str, int] = {}
    for column in MODELS:
        suffix = column.removeprefix("{wiki}")
        if suffix == column:
            out[column] = by_model.get(column, 0)
        else:
            out[column] = sum(n for name, n in by_model.items() if name.endswith(suffix))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--duplicates", type=float, default=0.30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, emulator_process("--latency", "0") as url:
        inp = Path(tmp) / "in.parquet"
        distinct = make_input(inp, args.rows, args.duplicates)
        report = asyncio.run(
            score_file_async(
                inp,
                Path(tmp) / "out.parquet",
                models=MODELS,
                rate=Budget.unlimited(),
                connection=Connection(endpoint=Endpoint(base_url=url)),
            )
        )
        by_model = columns(emulator_stats(url)["by_model"])
    sent = report.requests_sent
    naive = args.rows * len(MODELS)
    dedup = distinct * len(MODELS)
    revertrisk = by_model[MODELS[0]]
    results = {
        "benchmark": "requests_saved",
        "rows": args.rows,
        "distinct_revisions": distinct,
        "models": MODELS,
        "requests_naive": naive,
        "requests_dedup": dedup,
        "requests_lwbatch": sent,
        "requests_by_model": by_model,
        "revertrisk_requests_per_revision": round(revertrisk / distinct, 4),
        "saved_vs_naive": round(1 - sent / naive, 4),
        "saved_vs_dedup": round(1 - sent / dedup, 4),
        "rows_written": report.rows_written,
    }
    print(
        f"{args.rows:,} rows, {distinct:,} distinct revisions in {len(LANGS)} languages, "
        f"{len(MODELS)} models; {report.rows_written:,} rows written"
    )
    print(f"{'strategy':<10} {'requests':>10} {'per revision':>13} {'saved':>7}")
    for name, count in (("naive", naive), ("dedup", dedup), ("lwbatch", sent)):
        print(f"{name:<10} {count:>10,} {count / distinct:>13.3f} {1 - count / naive:>7.1%}")
    print(f"{'model':<30} {'requests':>10} {'per revision':>13}")
    for model in MODELS:
        print(f"{model:<30} {by_model[model]:>10,} {by_model[model] / distinct:>13.4f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
