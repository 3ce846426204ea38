"""Concurrent `lwbatch score` processes against an emulated gateway that counts each
caller's requests in a sliding window (300/3s: the tier budgets, compressed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from lwbatch.cli import main
from lwbatch.config import Budget, Endpoint, Rate
from lwbatch.pacing.shared import SharedLedger, identity
from lwbatch.testing.emulator import Emulator
from tests.conftest import EmulatorFactory, max_in_window, write_parquet

# Runs that share a budget in real time starve beside the Spark tests' JVMs on a loaded
# machine: the worker that runs those runs these too, one after another.
pytestmark = pytest.mark.xdist_group("spark")

RATE = "300/3s"
BUDGET = Rate(300, 3.0)
PER_SECOND = 100


def job(tmp_path: Path, name: str, revisions: int, first: int) -> tuple[Path, Path, Path]:
    """An input of `revisions` rev_ids from `first`, its output and its report."""
    ids = pa.array(range(first, first + revisions), pa.int64())
    inp = write_parquet(tmp_path / f"{name}.parquet", {"rev_id": ids})
    return inp, tmp_path / f"{name}-out.parquet", tmp_path / f"{name}.json"


def start(
    files: tuple[Path, Path, Path], base_url: str, token: str, *extra: str
) -> subprocess.Popen[bytes]:
    inp, out, report = files
    args = [sys.executable, "-m", "lwbatch", "score", str(inp), "-o", str(out)]
    args += ["-m", "enwiki-damaging", "--base-url", base_url, "--rate", RATE, "-q"]
    args += ["--report", str(report), *extra]
    env = {**os.environ, "LIFTWING_TOKEN": token}
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()


def report(files: tuple[Path, Path, Path]) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(files[2].read_bytes())
    return data


def wait_for(emu: Emulator, requests: int) -> None:
    deadline = time.monotonic() + 60
    while emu.stats.requests < requests:
        assert time.monotonic() < deadline
        time.sleep(0.005)  # polling the emulator's count, not waiting a fixed time


def used(emu: Emulator) -> float:
    """The callers' requests per second, as a share of one caller's budget."""
    times = list(emu.stats.arrivals)
    return (len(times) - 1) / (times[-1] - times[0]) / PER_SECOND


def test_two_runs_with_one_token_share_its_budget_half_and_half(
    emulator: EmulatorFactory, tmp_path: Path
) -> None:
    with emulator(budget=BUDGET) as (emu, url):
        big, small = job(tmp_path, "big", 500, 1_000), job(tmp_path, "small", 200, 5_000)
        procs = [start(big, url, "tok-1")]
        wait_for(emu, 50)  # the small run starts and ends while the big one runs
        procs.append(start(small, url, "tok-1"))
        for proc in procs:
            finish(proc)
        assert emu.stats.by_status["429"] <= 1
        assert max_in_window(list(emu.stats.arrivals), 3.0) <= 301
        assert used(emu) >= 0.95
    # While both ran each got half; then the big one had the budget to itself.
    assert [report(big)["shared_with"], report(small)["shared_with"]] == [1, 1]
    assert 0.45 <= report(small)["budget_share"] <= 0.55
    assert report(big)["requests_sent"] == 500


def test_three_runs_share_and_when_one_is_killed_the_others_take_its_part(
    emulator: EmulatorFactory, tmp_path: Path
) -> None:
    with emulator(budget=BUDGET) as (emu, url):
        jobs = [job(tmp_path, f"run{i}", 250, 10_000 * (i + 1)) for i in range(3)]
        procs = [start(files, url, "tok-1") for files in jobs]
        wait_for(emu, 250)
        procs[0].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        for proc in procs[1:]:
            finish(proc)
        procs[0].communicate(timeout=60)
        times = list(emu.stats.arrivals)
        assert emu.stats.by_status["429"] <= 1
        assert max_in_window(times, 3.0) <= 301
        assert used(emu) >= 0.95
    # The killed run's capacity is not lost: the second after it, the budget is used.
    after = bisect_left(times, killed_at + 1.5) - bisect_left(times, killed_at + 0.5)
    assert after >= 0.9 * PER_SECOND
    assert [report(files)["shared_with"] for files in jobs[1:]] == [2, 2]


def test_other_tokens_do_not_share_and_no_shared_budget_is_todays_behaviour(
    emulator: EmulatorFactory, tmp_path: Path
) -> None:
    with emulator(budget=BUDGET) as (emu, url):
        mine, yours = job(tmp_path, "mine", 200, 1_000), job(tmp_path, "yours", 200, 5_000)
        for proc in [start(mine, url, "tok-1"), start(yours, url, "tok-2")]:
            finish(proc)
        assert emu.stats.by_status["429"] == 0
        # Each token's own budget, both used at once (one shared would be 1.0).
        assert used(emu) >= 1.3
    assert [report(mine)["shared_with"], report(yours)["shared_with"]] == [0, 0]

    with emulator(budget=BUDGET) as (emu, url):
        one, two = job(tmp_path, "one", 250, 1_000), job(tmp_path, "two", 250, 5_000)
        flag = "--no-shared-budget"
        for proc in [start(one, url, "tok-1", flag), start(two, url, "tok-1", flag)]:
            finish(proc)
        # Each paces itself to the whole budget: together they go over it, and both get
        # 429s (a shared budget gets one at most).
        assert emu.stats.by_status["429"] >= 2
    assert [report(one)["shared_with"], report(two)["shared_with"]] == [None, None]


def test_another_rate_for_a_budget_in_use_is_refused_before_any_request(
    emulator: EmulatorFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out, _ = job(tmp_path, "late", 10, 1_000)
    with emulator() as (emu, url):
        running = SharedLedger.open(
            Budget.from_rate(Rate(300, 1.0)), identity(Endpoint(base_url=url), None)
        )
        try:
            code = main(["score", str(inp), "-o", str(out), "-m", "enwiki-damaging",
                         "--base-url", url, "--rate", "100/1s", "-q"])  # fmt: skip
        finally:
            running.close()
        assert emu.stats.requests == 0
    assert code == 2
    assert capsys.readouterr().err == (
        f"lwbatch: error: another lwbatch run (pid {os.getpid()}) shares this identity's "
        "request budget at 300/1s, and this run asks for 100/1s: give it the same --rate, "
        "or --no-shared-budget to keep a budget of its own (the gateway counts both)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.parquet"]


def test_a_state_dir_that_is_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out, _ = job(tmp_path, "run", 10, 1_000)
    blocker = tmp_path / "state"
    blocker.write_text("")
    code = main(["score", str(inp), "-o", str(out), "-m", "enwiki-damaging", "--rate", "10/s",
                 "--base-url", "http://127.0.0.1:9", "--state-dir", str(blocker)])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err == (
        f"lwbatch: error: --state-dir {blocker}: is a file, not a directory\n"
    )
    assert not out.exists()
    empty = main(["score", str(inp), "-o", str(out), "-m", "enwiki-damaging", "--rate", "10/s",
                  "--base-url", "http://127.0.0.1:9", "--state-dir", ""])  # fmt: skip
    assert empty == 2
    assert capsys.readouterr().err == (
        "lwbatch: error: --state-dir is empty: give a directory, or leave it out\n"
    )
