"""Real data, as the real servers answer it: rows written and requests sent per case.

Each case runs the `lwbatch score` command of a checkout (`--client`, default this one)
against this checkout's emulator, which answers as the model servers do (per-wiki
scores, 500 for a revision that cannot be fetched, 400 "Unsupported lang"). Run it
once per checkout to compare two versions:

    python benchmarks/real_data.py                        # this checkout
    python benchmarks/real_data.py --client /tmp/before   # another checkout

  same-id     rev_id 1234 on enwiki and on dewiki (a `lang` column), revertrisk
  data-lake   a wiki_db/revision_id table over 3 wikis, `{wiki}-damaging` + revertrisk
  missing-500 revertrisk-wikidata and articlequality, 20 revisions of which 5 missing,
              run twice (the second run is a rerun of the finished output)
  unsupported readability on 200 Volapuk (vo) and 20 English revisions
  extra-wikis eswikibooks-damaging, eswikiquote-goodfaith, enwiktionary-reverted
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from _common import emulator_process, emulator_stats

# Revisions above this are unknown to the emulator: 9015-9019 of the missing-500 case.
MAX_REV_ID = 9014


def write(path: Path, columns: dict[str, Any]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def cases(tmp: Path) -> list[tuple[str, Path, list[str], int]]:
    """(name, input, arguments, runs)."""
    same = tmp / "same.csv"
    same.write_text("rev_id,lang\n1234,en\n1234,de\n")
    lake = write(
        tmp / "lake.parquet",
        {
            "wiki_db": ["enwiki", "dewiki", "frwiki"] * 100,
            "revision_id": pa.array([rev for rev in range(1, 101) for _ in range(3)], pa.int64()),
        },
    )
    missing = write(tmp / "missing.parquet", {"rev_id": pa.array(range(9000, 9020), pa.int64())})
    unsupported = write(
        tmp / "vo.parquet",
        {"rev_id": pa.array(range(1, 221), pa.int64()), "lang": ["vo"] * 200 + ["en"] * 20},
    )
    extra = write(tmp / "extra.parquet", {"rev_id": pa.array(range(1, 11), pa.int64())})
    return [
        ("same-id", same, ["-m", "revertrisk-language-agnostic"], 1),
        (
            "data-lake",
            lake,
            [
                "--wiki-column",
                "wiki_db",
                "--id-column",
                "revision_id",
                "-m",
                "{wiki}-damaging",
                "-m",
                "revertrisk-language-agnostic",
            ],
            1,
        ),
        ("missing-500", missing, ["-m", "revertrisk-wikidata", "-m", "articlequality"], 2),
        ("unsupported", unsupported, ["-m", "readability", "--concurrency", "4"], 1),
        (
            "extra-wikis",
            extra,
            ["-m", "eswikibooks-damaging,eswikiquote-goodfaith,enwiktionary-reverted"],
            1,
        ),
    ]


def run_case(
    client: Path, base_url: str, inp: Path, out: Path, args: list[str]
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(client)}
    env.pop("LIFTWING_TOKEN", None)
    command = [sys.executable, "-m", "lwbatch", "score", str(inp), "-o", str(out)]
    command += [*args, "--base-url", base_url, "--rate", "2000/s", "-q"]
    # Run from the input's directory: `-m` puts the working directory first on sys.path.
    return subprocess.run(
        command, capture_output=True, text=True, env=env, check=False, cwd=inp.parent
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--client", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, inp, extra, runs in cases(tmp):
            with emulator_process("--latency", "0.01", "--max-rev-id", str(MAX_REV_ID)) as url:
                out = tmp / f"{name}.parquet"
                codes = []
                error = ""
                for _ in range(runs):
                    done = run_case(args.client, url, inp, out, extra)
                    codes.append(done.returncode)
                    if done.returncode:
                        error = done.stderr.strip().splitlines()[-1][:120]
                stats = emulator_stats(url)
            rows = pq.read_table(out).num_rows if out.exists() else 0
            errors: dict[str, int] = {}
            if out.exists():
                table = pq.read_table(out)
                for column in table.column_names:
                    if pa.types.is_struct(table.schema.field(column).type):
                        for value in table.column(column).combine_chunks().field("error"):
                            key = f"{column}:{value.as_py()}"
                            errors[key] = errors.get(key, 0) + 1
            results[name] = {
                "exit": codes,
                "rows": rows,
                "requests": stats["requests"],
                "by_status": stats["by_status"],
                "cells": errors,
                "error": error,
            }
    print(f"client: {args.client}")
    print(f"{'case':<12} {'exit':>6} {'rows':>6} {'requests':>9}  statuses / error")
    for name, r in results.items():
        detail = r["error"] or ", ".join(f"{k}: {v}" for k, v in sorted(r["by_status"].items()))
        exits = "/".join(map(str, r["exit"]))
        print(f"{name:<12} {exits:>6} {r['rows']:>6} {r['requests']:>9}  {detail}")
    print(json.dumps({"benchmark": "real_data", "client": str(args.client), "cases": results}))


if __name__ == "__main__":
    main()
