"""Shared by the benchmark scripts: an emulator in its own process, window counting."""

from __future__ import annotations

import os
import subprocess
import time
from bisect import bisect_left
from typing import Any

from lwbatch.testing.emulator import fetch_stats, spawned


def max_in_window(times: list[float], period: float) -> int:
    """Most events in any half-open window [t, t + period); `times` sorted."""
    return max((bisect_left(times, t + period) - i for i, t in enumerate(times)), default=0)


# The emulator in a process of its own, and its counters.
emulator_process = spawned
emulator_stats = fetch_stats


def run_measured(command: list[str]) -> dict[str, float]:
    """Run a process to its end; its wall time, CPU time and peak RSS, from the kernel."""
    started = time.perf_counter()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{command[:4]} exited with {code}")
    return {
        "seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


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
