"""Does a short script that uses lwbatch ever abort at interpreter exit?

A new user's script (import lwbatch, score a few revisions, `flatten`, then
`pd.read_parquet`) aborted twice in about 60 runs with "terminate called without an
active exception". Under gdb the aborting thread is one of Arrow's I/O threads: pandas
opens a local file itself and hands pyarrow a Python file object, whose reads Arrow
makes on its I/O pool into Python-backed buffers. When such a read completes after the
interpreter has begun finalizing, releasing its buffer takes the GIL, CPython ends the
thread with pthread_exit, and the unwind through a noexcept destructor calls
std::terminate. lwbatch plays no part: pandas alone aborts as often. lwbatch's own reads
pass paths, never Python file objects, and so does the workaround below.

Each variant runs --runs times, each in a fresh interpreter, against the emulator:

  user script        the new user's script as written
  path to pyarrow    the same with pd.read_parquet(path, filesystem=LocalFileSystem())
  pandas alone       only `pd.read_parquet(path)`: no lwbatch

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

USER_SCRIPT = """
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
VARIANTS = {
    "user script": USER_SCRIPT,
    "path to pyarrow": USER_SCRIPT.replace(
        "pd.read_parquet(sample)",
        "pd.read_parquet(sample, filesystem=__import__('pyarrow.fs').fs.LocalFileSystem())",
    ),
    "pandas alone": "import sys\nimport pandas as pd\npd.read_parquet(sys.argv[2])\n",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    sample = Path(__file__).resolve().parent.parent / "lwbatch/data/sample_revisions.parquet"
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp, emulator_process("--latency", "0") as url:
        for name, script in VARIANTS.items():
            codes: collections.Counter[int] = collections.Counter()
            messages: collections.Counter[str] = collections.Counter()
            started = time.perf_counter()
            for _ in range(args.runs):
                done = subprocess.run(
                    [sys.executable, "-c", script, url, str(sample)],
                    capture_output=True,
                    text=True,
                    cwd=tmp,
                )
                codes[done.returncode] += 1
                if done.returncode != 0:
                    messages[(done.stderr.strip().splitlines() or [""])[-1][:100]] += 1
            results[name] = {
                "runs": args.runs,
                "failed": args.runs - codes[0],
                "seconds": round(time.perf_counter() - started),
                "exit_codes": {str(k): v for k, v in sorted(codes.items())},
                "messages": dict(messages),
            }
    print(f"{'variant':<18} {'runs':>5} {'failed':>7}  exit codes")
    for name, row in results.items():
        codes_text = ", ".join(f"{k}: {v}" for k, v in row["exit_codes"].items())  # type: ignore[attr-defined]
        print(f"{name:<18} {row['runs']:>5} {row['failed']:>7}  {codes_text}")
        for message, count in row["messages"].items():  # type: ignore[attr-defined]
            print(f"{'':<18} {count} x {message}")
    print(json.dumps({"benchmark": "exit_abort", "variants": results}))


if __name__ == "__main__":
    main()
