"""The `lwbatch` process at its edges: signals at any moment, streams that go away, a
terminal with no size. Each test runs the command as its own process."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch.testing.emulator import Latency
from tests.conftest import EmulatorFactory, write_parquet

# Runs the console entry as the `lwbatch` executable does, after arranging to block (and
# say "ready" on stdout) when a module is first imported, or at exit ("exit").
_BLOCKING = """
import atexit, sys, time
target = sys.argv[1]
def block():
    sys.__stdout__.write("ready\\n")
    sys.__stdout__.flush()
    time.sleep(60)
class Hook:
    def find_spec(self, name, path=None, target_=None):
        if name == target:
            sys.meta_path.remove(self)
            block()
        return None
if target == "exit":
    atexit.register(block)
else:
    sys.meta_path.insert(0, Hook())
sys.argv = ["lwbatch", *sys.argv[2:]]
from lwbatch.cli import console
console()
"""

MOMENTS = [
    "pyarrow",  # the heavy imports, inside the command's own
    "lwbatch.cli.app",  # the commands' modules
    "tqdm",  # the run starting (imported as the live view is made)
    "exit",  # the command has returned: the interpreter is exiting
]


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize(
    ("sig", "line", "code"),
    [
        (signal.SIGINT, "lwbatch: interrupted", 130),
        (signal.SIGTERM, "lwbatch: stopped by SIGTERM", 143),
    ],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_at_any_moment_gives_one_line_and_its_exit_code(
    moment: str, sig: int, line: str, code: int, revs_parquet: Path, tmp_path: Path
) -> None:
    # The endpoint is never reached: the run is stopped before its first request, or
    # (at "exit") --help has no request to make.
    args = (
        ["--help"]
        if moment == "exit"
        else ["score", str(revs_parquet), "-o", str(tmp_path / "out.parquet"), "-m",
              "enwiki-damaging", "--endpoint", "http://lwbatch.invalid"]
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", _BLOCKING, moment, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        ready = ""
        while ready != "ready\n":  # --help's own lines come first at "exit"
            ready = proc.stdout.readline()
            assert ready, "the process ended before the moment came"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == code
    assert err == f"{line}\n"


def _score(url: str, inp: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lwbatch", "score", str(inp), "-o", str(out),
            "-m", "enwiki-damaging", "--endpoint", url, "--rate", "unlimited",
            "--concurrency", "2", *extra]  # fmt: skip


def _input(tmp_path: Path, rows: int) -> Path:
    return write_parquet(
        tmp_path / "in.parquet", {"rev_id": pa.array(range(1, rows + 1), pa.int64())}
    )


def test_a_reader_that_goes_away_does_not_change_the_outcome(
    emulator: EmulatorFactory, tmp_path: Path
) -> None:
    inp, out = _input(tmp_path, 60), tmp_path / "out.parquet"
    with emulator(latency=Latency("fixed", 0.02)) as (_, url):
        proc = subprocess.Popen(
            _score(url, inp, out, "--log-json", "--progress-every", "0.1"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        first = proc.stderr.readline()  # `| head -1`: one line, then the reader leaves
        proc.stderr.close()
        assert proc.wait(timeout=60) == 0
    assert b'"event":"log"' in first
    assert pq.read_table(out).column("rev_id").to_pylist() == list(range(1, 61))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "out.parquet"]


def test_closed_standard_streams_do_not_change_the_outcome(
    running_emulator: tuple[object, str], tmp_path: Path
) -> None:
    _, url = running_emulator
    inp, out = _input(tmp_path, 20), tmp_path / "out.parquet"
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&- 2>&-', "sh", *_score(url, inp, out)], timeout=60
    )
    assert done.returncode == 0
    assert pq.read_table(out).num_rows == 20


def _run_on_terminal(command: list[str], columns: int) -> str:
    """Run `command` with its stderr on a terminal `columns` wide (0: no size); its output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize(("columns", "bar"), [(0, False), (120, True)])
def test_a_terminal_without_a_size_gets_progress_lines(
    emulator: EmulatorFactory, tmp_path: Path, columns: int, bar: bool
) -> None:
    inp = _input(tmp_path, 40)
    with emulator(latency=Latency("fixed", 0.05)) as (_, url):
        seen = _run_on_terminal(
            _score(url, inp, tmp_path / "out.parquet", "--progress-every", "0.1"), columns
        )
    assert ("lwbatch: INFO: progress: " in seen) is not bar
    assert ("scoring: " in seen) is bar


def test_shell_completion_is_served_by_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lwbatch"],
        env={**os.environ, "_LWBATCH_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("_lwbatch_completion() {")
