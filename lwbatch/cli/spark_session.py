"""The command's Spark session: its JVM and where the JVM's log lines go, the
interpreter local executors run, Ctrl-C and SIGTERM while the job runs, and the
progress lines. The command line's to set up: it changes the process (environment,
file descriptors, signal handlers)."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from lwbatch.errors import LWBatchError

log = logging.getLogger("lwbatch")


class JvmLog:
    """Where the JVM's and Spark's log lines go: the console at --spark-log's level, else
    a file (named when the job fails, removed when it succeeds)."""

    def __init__(self, level: str | None) -> None:
        self.level = level.upper() if level else None
        self.path: str | None = None
        if self.level is None:
            handle, self.path = tempfile.mkstemp(prefix="lwbatch-spark-", suffix=".log")
            os.close(handle)

    @contextmanager
    def launching(self) -> Iterator[None]:
        """While the JVM starts: its standard error (and its children's) is the file."""
        if self.path is None:
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        target = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.dup2(target, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(target)

    def discard(self) -> None:
        if self.path is not None:
            Path(self.path).unlink(missing_ok=True)

    def reason(self, exc: BaseException) -> str:
        """Why the JVM did not start: the log's last line, and where the log is."""
        if self.path is None:
            return _first_line(exc)
        try:
            lines = [line.strip() for line in Path(self.path).read_text().splitlines()]
        except OSError:
            lines = []
        said = [line for line in lines if line]
        return f"{said[-1] if said else _first_line(exc)} (Spark's log: {self.path})"


class ProgressLines:
    """While the job runs, a line every `every` seconds from what its tasks committed
    (Spark's own accumulators only arrive as tasks end)."""

    def __init__(self, area: Any, every: float) -> None:
        self._area = area
        self._every = every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lwbatch-spark-lines", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._every):
            try:
                answers, requests = self._area.tally()
            except (OSError, pa.ArrowException, LWBatchError):
                continue
            log.info(
                "spark: %s answers kept, %s requests sent so far (by every run of this job)",
                f"{answers:,}",
                f"{requests:,}",
            )

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def stop_on_signals(session: Any, kept: Any, jvm_log: JvmLog) -> Any:
    """While the job runs, Ctrl-C or SIGTERM ends it at once, in one line: the JVM is
    killed (its tasks with it) and the process exits 130 or 143. What the tasks
    committed is kept for the rerun. Returns the function that puts the handlers back."""

    def stop(signum: int, frame: Any) -> None:
        code = 130 if signum == signal.SIGINT else 143
        kept_too = (
            f"; the answers received are kept ({kept.path}): run the same command again "
            "to finish the job"
            if kept.area().exists()
            else ""
        )
        try:
            sys.stderr.write(f"lwbatch: interrupted{kept_too}\n")
            sys.stderr.flush()
        except OSError:
            pass
        gateway = getattr(session.sparkContext, "_gateway", None)
        process = getattr(gateway, "proc", None)
        if process is not None:
            process.kill()
        jvm_log.discard()
        os._exit(code)  # py4j's threads would print tracebacks on the way out

    earlier = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in earlier.items():
            signal.signal(sig, handler)

    return restore


def _is_local(master: str | None) -> bool:
    """Whether the job's executors run on this machine: --master, else the master
    Spark would take (PYSPARK_SUBMIT_ARGS, MASTER, spark-defaults.conf), else local."""
    if master is None:
        args = shlex.split(os.environ.get("PYSPARK_SUBMIT_ARGS", ""))
        if "--master" in args[:-1]:
            master = args[args.index("--master") + 1]
        else:
            master = os.environ.get("MASTER") or _default_master()
    return master is None or master.startswith("local")


def _default_master() -> str | None:
    conf = os.environ.get("SPARK_CONF_DIR") or os.path.join(
        os.environ.get("SPARK_HOME", ""), "conf"
    )
    try:
        lines = Path(conf, "spark-defaults.conf").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(None, 1)
        if len(fields) == 2 and fields[0] == "spark.master":
            return fields[1].strip()
    return None


def session(master: str | None, jvm_log: JvmLog, *, tables: bool) -> Any:
    from pyspark.sql import SparkSession

    # Spark's own progress bars and log lines would bury the summary and the one-line
    # errors; what lwbatch says is what matters here.
    builder = SparkSession.builder.appName("lwbatch").config(
        "spark.ui.showConsoleProgress", "false"
    )
    if master:
        builder = builder.master(master)
    if tables:
        builder = builder.enableHiveSupport()
    if _is_local(master) and "PYSPARK_PYTHON" not in os.environ:
        # Local executors run the interpreter lwbatch runs in, not the first python3 on
        # PATH, which may lack lwbatch or pyarrow (a pipx or venv install).
        os.environ["PYSPARK_PYTHON"] = sys.executable
    with jvm_log.launching():
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel(jvm_log.level or "WARN")
    return session


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["JvmLog", "ProgressLines", "session", "stop_on_signals"]
