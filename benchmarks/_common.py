"""Shared by the benchmark scripts: an emulator in its own process, window counting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

from lwbatch.testing.emulator import fetch_stats, spawned


def max_in_window(times: list[float], period: float) -> int:
    """Most events in any half-open window [t, t + period); `times` sorted."""
    return max((bisect_left(times, t + period) - i for i, t in enumerate(times)), default=0)


# The emulator in a process of its own, and its counters.
emulator_process = spawned
emulator_stats = fetch_stats


# Linux carries a process' peak RSS across exec from the memory it had before: a child
# started by this (large) process would report this process' peak as its own. So the
# child is started by a small launcher's fork, whose memory is a fresh interpreter's.
_LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"cpu": usage.ru_utime + usage.ru_stime, "rss_kb": usage.ru_maxrss}, f)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(command: list[str]) -> dict[str, float]:
    """Run a process to its end; its wall time, CPU time and peak RSS, from the kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "usage.json"
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(report), *command])
        code = proc.wait()
        wall = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"{command[:4]} exited with {code}")
        usage = json.loads(report.read_text())
    return {"seconds": wall, "cpu_seconds": usage["cpu"], "peak_rss_mb": usage["rss_kb"] / 1024}


def spark_session(master: str) -> Any:
    """A local SparkSession for a benchmark: its executors run this interpreter, and
    Spark's console progress and log lines are off."""
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master(master)
        .appName("lwbatch-benchmark")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("FATAL")
    return session
