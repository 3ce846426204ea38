"""Shared by the benchmark scripts: an emulator in its own process, window counting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx


def max_in_window(times: list[float], period: float) -> int:
    """Most events in any half-open window [t, t + period); `times` sorted."""
    return max((bisect_left(times, t + period) - i for i, t in enumerate(times)), default=0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def emulator_process(*options: str) -> Iterator[str]:
    """`lwbatch emulate` in a process of its own, so it does not share our CPU and GIL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lwbatch", "emulate", "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base_url}/_emulator/stats", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.1)
        yield base_url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def emulator_stats(base_url: str, *, arrivals: bool = False) -> dict[str, Any]:
    url = f"{base_url}/_emulator/stats" + ("?arrivals=1" if arrivals else "")
    data: dict[str, Any] = httpx.get(url, timeout=30).json()
    return data


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
