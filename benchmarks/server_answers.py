"""The model servers' newest answers: requests and labels per case, for this or another
checkout of lwbatch, against this checkout's emulator (which answers as the servers'
source does). Run it once per checkout to compare two versions:

    python benchmarks/server_answers.py                        # this checkout
    python benchmarks/server_answers.py --client /tmp/before   # another checkout

Each case is scored, then run again (the same command: what a rerun pays), some into a
second output with the first run's --cache (what the cache saves). Cases, by the
numbered items of the fidelity issue:

  1 aq-missing     articlequality, 20 English revisions, 5 missing ([404] bodies)
  2 coverage       articlequality on 30 annwiki + 10 enwiki rows; revertrisk on 20 closed
                   aawiki, 20 bolwiki (newer than its list) and 20 enwiki rows
  3 safety-net     articlequality on 50 annwiki rows sent anyway (--ignore-coverage
                   where the client has it): 500 KeyError for each
  4 ki-codes       revertrisk on 40 revisions, 5 suppressed and 5 without a parent;
                   reference-need on 10, 2 missing and 2 suppressed (MediaWiki bodies)
  5 parent         enwiki-damaging and revertrisk-wikidata, 10 revisions, 3 whose parent
                   is missing
  6 revscoring     enwiki-damaging on 10 revisions: 2 not wikitext, 2 failing feature
                   extraction ("Generic error"); articlequality 2 empty; revertrisk-
                   wikidata 2 with a hidden user
  7 poison         revertrisk on 200 English revisions, one poison per batch of 20
  8 outlink-title  outlink-topic-model on 20 rows with page_title (no page_id), cached
  9 new-wikis      readability on one row of each of the 9 newest Wikipedias (wiki_db)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from _common import emulator_process, emulator_stats

NEW_WIKIS = ["bol", "isv", "kai", "kaj", "mag", "nup", "ppl", "rki", "tok"]


@dataclass
class Case:
    name: str
    inputs: dict[str, Any]
    args: list[str]
    problems: dict[str, list[int]] = field(default_factory=dict)
    # Flags passed only to a client whose `score --help` knows them.
    new_flags: list[str] = field(default_factory=list)
    # "same": a rerun of the same command; "cache": another output from the same cache.
    reruns: list[str] = field(default_factory=lambda: ["same"])


def revs(start: int, stop: int) -> pa.Array:
    return pa.array(range(start, stop), pa.int64())


CASES = [
    Case(
        "aq-missing",
        {"rev_id": revs(1, 21)},
        ["-m", "articlequality"],
        {"missing": [3, 7, 11, 15, 19]},
    ),
    Case(
        "coverage",
        {
            "rev_id": revs(1, 101),
            "lang": ["ann"] * 30 + ["en"] * 10 + ["aa"] * 20 + ["bol"] * 20 + ["en"] * 20,
        },
        ["-m", "articlequality,revertrisk-language-agnostic"],
    ),
    Case(
        "safety-net",
        {"rev_id": revs(1, 51), "lang": ["ann"] * 50},
        ["-m", "articlequality", "--concurrency", "8"],
        new_flags=["--ignore-coverage"],
    ),
    Case(
        "ki-codes",
        {"rev_id": revs(1, 41), "lang": ["en"] * 40},
        ["-m", "revertrisk-language-agnostic,reference-need"],
        {"deleted": [2, 4, 6, 8, 10], "parent_missing": [12, 14, 16, 18, 20], "missing": [30, 31]},
    ),
    Case(
        "parent",
        {"rev_id": revs(1, 11)},
        ["-m", "enwiki-damaging,revertrisk-wikidata"],
        {"parent_missing": [2, 5, 8]},
    ),
    Case(
        "revscoring",
        {"rev_id": revs(1, 11)},
        ["-m", "enwiki-damaging,articlequality,revertrisk-wikidata"],
        {"not_wikitext": [1, 2], "generic": [3, 4], "empty": [5, 6], "hidden_user": [7, 8]},
    ),
    Case(
        "poison",
        {"rev_id": revs(1, 201), "lang": ["en"] * 200},
        ["-m", "revertrisk-language-agnostic"],
        {"poison": [r for r in range(1, 201) if r % 20 == 7]},
        reruns=["same", "cache"],
    ),
    Case(
        "outlink-title",
        {
            "rev_id": revs(1, 21),
            "lang": ["en"] * 20,
            "page_title": [f"Page {n}" for n in range(20)],
        },
        ["-m", "outlink-topic-model"],
        reruns=["cache"],
    ),
    Case(
        "new-wikis",
        {"rev_id": revs(1, 10), "wiki_db": [f"{code}wiki" for code in NEW_WIKIS]},
        ["-m", "readability", "--wiki-column", "wiki_db"],
    ),
]


def knows(client: Path, flag: str) -> bool:
    env = {**os.environ, "PYTHONPATH": str(client)}
    done = subprocess.run(
        [sys.executable, "-m", "lwbatch", "score", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=client,
    )
    return flag in done.stdout


def score(client: Path, url: str, inp: Path, out: Path, args: list[str]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(client)}
    env.pop("LIFTWING_TOKEN", None)
    command = [sys.executable, "-m", "lwbatch", "score", str(inp), "-o", str(out), *args]
    command += ["--base-url", url, "--rate", "2000/s", "-q"]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, check=False, cwd=inp.parent
    )
    last = done.stderr.strip().splitlines()[-1][:120] if done.returncode else ""
    return done.returncode, last


def labels(out: Path) -> dict[str, int]:
    if not out.exists():
        return {}
    table = pq.read_table(out)
    found: Counter[str] = Counter()
    for column in table.column_names:
        if pa.types.is_struct(table.schema.field(column).type):
            for value in table.column(column).combine_chunks().field("error").to_pylist():
                found[f"{column}:{value or 'scored'}"] += 1
    return dict(sorted(found.items()))


def run_case(client: Path, case: Case, tmp: Path, extra: list[str]) -> dict[str, Any]:
    inp = tmp / f"{case.name}.parquet"
    pq.write_table(pa.table(case.inputs), inp)
    options = [
        *(["--problem", f"{kind}:{','.join(map(str, ids))}"] for kind, ids in case.problems.items())
    ]
    emulator_args = ["--latency", "0.005"] + [a for pair in options for a in pair]
    out = tmp / f"{case.name}.out.parquet"
    cache = ["--cache", str(tmp / f"{case.name}.db")]
    args = [*case.args, *extra, *cache]
    result: dict[str, Any] = {"runs": []}
    with emulator_process(*emulator_args) as url:
        code, error = score(client, url, inp, out, args)
        first = emulator_stats(url)["requests"]
        result["runs"].append(
            {"exit": code, "requests": first, "labels": labels(out), "error": error}
        )
        seen = first
        for rerun in case.reruns:
            target = out if rerun == "same" else tmp / f"{case.name}.cached.parquet"
            code, error = score(client, url, inp, target, args)
            total = emulator_stats(url)["requests"]
            result["runs"].append(
                {
                    "rerun": rerun,
                    "exit": code,
                    "requests": total - seen,
                    "labels": labels(target),
                    "error": error,
                }
            )
            seen = total
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--client", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        for case in CASES:
            extra = [flag for flag in case.new_flags if knows(args.client, flag)]
            results[case.name] = run_case(args.client, case, Path(tmp_name), extra)
    print(f"client: {args.client}")
    print(f"{'case':<14} {'run':<6} {'exit':>4} {'requests':>8}  labels / error")
    for name, result in results.items():
        for run in result["runs"]:
            said = run["error"] or ", ".join(f"{k} {v}" for k, v in run["labels"].items())
            kind = run.get("rerun", "first")
            print(f"{name:<14} {kind:<6} {run['exit']:>4} {run['requests']:>8}  {said}")
    print(json.dumps({"benchmark": "server_answers", "client": str(args.client), "cases": results}))


if __name__ == "__main__":
    main()
