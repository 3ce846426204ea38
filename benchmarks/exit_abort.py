"""Does a short script that uses lwbatch ever abort at interpreter exit?

A new user's script (import lwbatch, score a few revisions, `flatten`, then
`pd.read_parquet`) aborted twice in about 60 runs with "terminate called without an
active exception" (exit 134): a C++ std::thread destroyed while still joinable at
process exit. This runs that script --runs times against the emulator, each in a fresh
interpreter, and counts the exits that are not 0.

    python benchmarks/exit_abort.py --runs 200
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emulator_process

SCRIPT = """
import sys
import pandas as pd
import lwbatch
from lwbatch import Connection, Endpoint

url, sample = sys.argv[1], sys.argv[2]
rows = lwbatch.score([101, 102, 103, 104], models=["enwiki-damaging"], rate="unlimited",
                     connection=Connection(endpoint=Endpoint(base_url=url)))
flat = lwbatch.flatten(rows)
frame = pd.read_parquet(sample)
print(len(flat), len(frame))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    sample = Path(__file__).resolve().parent.parent / "lwbatch/data/sample_revisions.parquet"
    codes: collections.Counter[int] = collections.Counter()
    messages: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, emulator_process("--latency", "0") as url:
        for _ in range(args.runs):
            done = subprocess.run(
                [sys.executable, "-c", SCRIPT, url, str(sample)],
                capture_output=True,
                text=True,
                cwd=tmp,
            )
            codes[done.returncode] += 1
            if done.returncode != 0:
                messages[(done.stderr.strip().splitlines() or [""])[-1][:120]] += 1
    failed = args.runs - codes[0]
    print(f"{args.runs} runs of the script in {time.perf_counter() - started:.0f} s")
    print(f"{'exit code':>10} {'runs':>6}")
    for code, count in sorted(codes.items()):
        print(f"{code:>10} {count:>6}")
    for message, count in messages.most_common():
        print(f"  {count} x {message}")
    print(
        json.dumps(
            {
                "benchmark": "exit_abort",
                "runs": args.runs,
                "failed": failed,
                "exit_codes": {str(k): v for k, v in codes.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
