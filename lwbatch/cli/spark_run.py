"""`lwbatch score --engine spark`: the same scoring inside a Spark job, for people who
do not write Spark code. INPUT is a Parquet file or directory (or a table), OUTPUT a
Parquet directory (or a table), written beside its final name and moved into place
when the job is done. Paths may be URIs (hdfs://, file://): they are reached through
pyarrow's file systems, as Spark reaches them through Hadoop's."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyarrow import fs as pafs

from lwbatch import errors
from lwbatch.cli.scoring import NO_CONTACT, Reporting
from lwbatch.cli.spark_session import JvmLog, ProgressLines, stop_on_signals
from lwbatch.cli.spark_session import session as start_session
from lwbatch.config import Budget
from lwbatch.engine.stats import INVALID_INPUT, OutputTally, RunReport, RunStats
from lwbatch.errors import InputError, LWBatchError, SparkJobError, UsageError
from lwbatch.identity import Identity
from lwbatch.settings import Pacing, RunSettings

log = logging.getLogger("lwbatch")
# The last line of a Python worker's traceback: "module.Class: message".
_RAISED = re.compile(r"([A-Za-z_][\w.]*): (.+)")


@dataclass(frozen=True, slots=True)
class SparkPlaces:
    """Where a Spark job reads and writes: INPUT or a table, --output or a table."""

    input_path: str | None
    output: str | None
    input_table: str | None
    output_table: str | None

    @classmethod
    def of(
        cls,
        input_paths: tuple[str, ...],
        output: str | None,
        input_table: str | None,
        output_table: str | None,
    ) -> SparkPlaces:
        if (not input_paths) == (input_table is None):
            raise UsageError("give INPUT or --input-table (one of them)")
        if len(input_paths) > 1 or "-" in input_paths:
            raise UsageError(
                "--engine spark reads one INPUT (a Parquet file or directory, or a URI), "
                "or --input-table"
            )
        if (output is None) == (output_table is None):
            raise UsageError("give --output or --output-table (one of them)")
        if output_table is not None and output_table == input_table:
            raise UsageError(f"--output-table {output_table} is the input table; choose another")
        return cls(input_paths[0] if input_paths else None, output, input_table, output_table)

    def locations(self, restart: bool) -> tuple[_Location | None, _Location | None]:
        """The input and output paths as Spark and pyarrow reach them, checked."""
        source = _Location.of(self.input_path, "INPUT") if self.input_path is not None else None
        if source is not None and not source.exists():
            raise InputError("no such file or directory", path=self.input_path or "")
        if source is not None and source.path.lower().endswith(_TEXT):
            raise InputError(
                "--engine spark reads Parquet (a file or a directory of them); convert the "
                "CSV, or score it with the local engine",
                path=self.input_path or "",
            )
        output = self.output
        target = _Location.of(output, "--output") if output is not None else None
        if target is not None and source is not None and _overlaps(source, target):
            raise UsageError(f"--output {output} is the input, or holds it; choose another output")
        if target is not None and target.exists() and not restart:
            raise UsageError(
                f"--output {output} exists; pass --restart to replace it, or choose another output"
            )
        if target is not None and not target.parent_exists():
            raise UsageError(f"--output {output}: its directory does not exist")
        return source, target


_TEXT = (".csv", ".tsv", ".csv.gz", ".tsv.gz")


def score_on_spark(
    places: SparkPlaces,
    settings: RunSettings,
    reporting: Reporting,
    *,
    master: str | None,
    slots: int | None,
    restart: bool,
    progress: str | None,
    cache: Path | None,
    commit_every: float | None,
    spark_log: str | None,
    warn_no_contact: bool,
) -> None:
    try:
        from py4j.protocol import Py4JError  # type: ignore[import-untyped]
        from pyspark.errors import PySparkException
    except ImportError:
        raise UsageError("--engine spark needs PySpark: pip install 'lwbatch[spark]'") from None
    if settings.connection.credentials is not None:
        raise UsageError(
            "OAuth2 credentials (`credentials`, or LIFTWING_CLIENT_ID/SECRET) are for the "
            "local engine: give the Spark job a token (LIFTWING_TOKEN or --token-file) "
            "that lasts the job"
        )
    # The budget, and the refusals that come with it, before a session is started.
    identity = Identity.of(
        settings.connection, Pacing(share=False), budget=settings.budget, tier=settings.tier
    )
    source, target = places.locations(restart)
    kept = _progress(places, (source, target), progress, restart, commit_every, cache)
    budget = identity.budget
    jvm_log = JvmLog(spark_log)
    try:
        session = start_session(
            master, jvm_log, tables=bool(places.input_table or places.output_table)
        )
    except (PySparkException, Py4JError) as exc:
        raise SparkJobError(f"Spark could not start: {jvm_log.reason(exc)}") from None
    restore = stop_on_signals(session, kept, jvm_log)
    lines = ProgressLines(kept.area(), reporting.progress_every or 60.0)
    try:
        table = places.output_table
        if table is not None and session.catalog.tableExists(table) and not restart:
            raise UsageError(
                f"--output-table {table} exists; pass --restart to replace it, or choose "
                "another table"
            )
        report = _run_job(
            session, places, (source, target), replace(settings, budget=budget), slots, kept
        )
        report = replace(
            report, budget_source=identity.choice.source, budget_reason=identity.choice.reason
        )
        if warn_no_contact:
            log.warning(NO_CONTACT)
    except (PySparkException, Py4JError) as exc:
        error = job_error(exc, jvm_log.path)
        if jvm_log.path is not None and jvm_log.path not in str(error):
            jvm_log.discard()  # the task's own error says it all
        raise _kept_for_rerun(error, kept) from None
    except (UsageError, InputError):
        jvm_log.discard()
        raise
    except LWBatchError as exc:  # the pre-flight's: a 401, nothing deployed, unreachable
        jvm_log.discard()
        raise _kept_for_rerun(exc, kept) from None
    except BaseException:
        jvm_log.discard()
        raise
    finally:
        lines.stop()
        restore()
    jvm_log.discard()
    reporting.show(report)
    reporting.save(report)


def _kept_for_rerun(error: LWBatchError, kept: Any) -> LWBatchError:
    """`error`, saying that the answers received are kept, if the job kept any."""
    if not kept.area().exists():
        return error
    return SparkJobError(
        f"{error}; the answers received are kept ({kept.path}): run the same command "
        "again to finish the job, paying only for what is unanswered",
        exit_code=error.exit_code,
    )


def _progress(
    places: SparkPlaces,
    where: tuple[_Location | None, _Location | None],
    given: str | None,
    restart: bool,
    commit_every: float | None,
    cache: Path | None,
) -> Any:
    """Where the job's tasks commit their answers: --progress, else beside --output;
    how often; and the score cache they read. Checked before any session starts."""
    from lwbatch.cache import SqliteScoreCache
    from lwbatch.spark import Progress

    source, target = where
    if cache is not None:
        SqliteScoreCache(cache).close()  # a bad cache fails here
    every = {} if commit_every is None else {"commit_every": commit_every}
    if given is None and target is None:
        raise UsageError(
            "--output-table needs --progress DIR: where the tasks commit their answers, so "
            "that a failed job is finished by running it again"
        )
    if given is None:
        assert target is not None
        path = target.sibling(f".{target.name}.lwbatch-progress").text
    else:
        place = _Location.of(given, "--progress")
        for other, flag in ((source, "INPUT"), (target, "--output")):
            if other is not None and _overlaps(other, place):
                raise UsageError(f"--progress {given} is {flag}, or holds it; choose another place")
        path = given if "://" in given else place.path
    kept = Progress(path, restart=restart, cache=cache, **every)
    kept.area().check()
    return kept


def _run_job(
    session: Any,
    places: SparkPlaces,
    where: tuple[_Location | None, _Location | None],
    settings: RunSettings,
    slots: int | None,
    progress: Any,
) -> RunReport:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    from lwbatch import spark as lwspark

    source, target = where
    try:
        if places.input_table is not None:
            df = session.table(places.input_table)
        else:
            assert source is not None
            df = session.read.parquet(source.text)  # reads the footers: a bad file fails
    except (PySparkException, Py4JError) as exc:
        named = f"--input-table {places.input_table}" if places.input_table else source
        raise InputError(_first_line(exc), path=str(places.input_path or named)) from None
    counted = lwspark.counters(session)
    started = time.monotonic()
    scored = lwspark.score(
        df,
        models=list(settings.models),
        rate=settings.budget,
        id_column=settings.id_column,
        wiki_column=settings.wiki_column,
        lang=settings.lang,
        slots=slots,
        connection=settings.connection,
        pacing=settings.pacing,
        progress=progress,
        counters=counted,
    )
    # The one action on `scored`: each key is scored once.
    if places.output_table is not None:
        _write_table(session, scored, places.output_table)
        written, output = session.table(places.output_table), places.output_table
    else:
        assert target is not None
        _write_directory(scored, target)
        written, output = session.read.parquet(target.text), places.output or ""
    # The output is in place: the fresh answers go to the cache, the progress away.
    lwspark.finish(progress)
    assert settings.budget is not None
    return _report(
        written,
        output,
        list(settings.models),
        counted,
        time.monotonic() - started,
        settings.budget,
        settings.pacing.concurrency,
    )


@dataclass(frozen=True, slots=True)
class _Location:
    """A path as Spark reads it (`text`) and as pyarrow's file system names it."""

    text: str
    filesystem: pafs.FileSystem
    path: str

    @classmethod
    def of(cls, value: str, flag: str) -> _Location:
        if "://" not in value:
            # A plain path is this machine's, also for Spark (which would otherwise
            # resolve it against Hadoop's default file system, HDFS on a cluster).
            absolute = str(Path(value).absolute())
            return cls(Path(absolute).as_uri(), pafs.LocalFileSystem(), absolute)
        try:
            filesystem, path = pafs.FileSystem.from_uri(value)
        except (pa.ArrowException, OSError, ValueError) as exc:
            reason = _first_line(exc)
            raise UsageError(f"{flag} {value}: cannot reach its file system: {reason}") from None
        return cls(value.rstrip("/"), filesystem, path.rstrip("/"))

    def exists(self) -> bool:
        info = self.filesystem.get_file_info(self.path)
        return bool(info.type != pafs.FileType.NotFound)

    def sibling(self, name: str) -> _Location:
        return _Location(
            f"{self.text.rsplit('/', 1)[0]}/{name}",
            self.filesystem,
            f"{self.path.rsplit('/', 1)[0]}/{name}",
        )

    def parent_exists(self) -> bool:
        parent = self.path.rsplit("/", 1)[0] or "/"
        info = self.filesystem.get_file_info(parent)
        return bool(info.type == pafs.FileType.Directory)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def remove(self) -> None:
        info = self.filesystem.get_file_info(self.path)
        if info.type == pafs.FileType.Directory:
            self.filesystem.delete_dir(self.path)
        elif info.type != pafs.FileType.NotFound:
            self.filesystem.delete_file(self.path)


def _overlaps(source: _Location, target: _Location) -> bool:
    if type(source.filesystem) is not type(target.filesystem):
        return False
    a, b = source.path.rstrip("/") + "/", target.path.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def _write_directory(scored: Any, target: _Location) -> None:
    # One name for every run of the job: a killed run's staging is cleared by the next.
    staging = target.sibling(f".{target.name}.lwbatch-staging")
    staging.remove()
    # With --restart the old output is moved aside, not removed, until the new one
    # is in place: a failure on the way leaves it (or puts it back).
    old = target.sibling(f".{target.name}.old-{os.getpid()}")
    try:
        scored.write.parquet(staging.text)
        if target.exists():
            target.filesystem.move(target.path, old.path)
        try:
            target.filesystem.move(staging.path, target.path)
        except BaseException:
            if old.exists() and not target.exists():
                target.filesystem.move(old.path, target.path)
            raise
        old.remove()
    finally:
        staging.remove()


def _write_table(session: Any, scored: Any, table: str) -> None:
    # Written under another name first, so that a job that fails leaves the old table
    # (with --restart) or none, never a partial one.
    staging = f"{table}_lwbatch_{os.getpid()}"
    old = f"{table}_lwbatch_old_{os.getpid()}"
    try:
        scored.write.saveAsTable(staging)
        if session.catalog.tableExists(table):
            session.sql(f"ALTER TABLE {table} RENAME TO {old}")
        session.sql(f"ALTER TABLE {staging} RENAME TO {table}")
        if session.catalog.tableExists(old):
            session.sql(f"DROP TABLE {old}")
    finally:
        if session.catalog.tableExists(old) and not session.catalog.tableExists(table):
            session.sql(f"ALTER TABLE {old} RENAME TO {table}")
        if session.catalog.tableExists(staging):
            session.sql(f"DROP TABLE {staging}")


def job_error(exc: Exception, log_path: str | None = None) -> LWBatchError:
    """A failed Spark job as one line: a task's own lwbatch error as it would be told
    by the local engine (with its exit code), anything else by its first line (and
    where Spark's log lines are)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    raised = _RAISED.fullmatch(lines[-1]) if lines else None
    if raised is not None and raised.group(1).startswith("lwbatch.errors."):
        kind = getattr(errors, raised.group(1).rsplit(".", 1)[1], None)
        code = kind.exit_code if isinstance(kind, type) and issubclass(kind, LWBatchError) else 1
        return SparkJobError(raised.group(2), exit_code=code)
    if raised is not None and raised.group(1) in ("ModuleNotFoundError", "ImportError"):
        return SparkJobError(
            f"a Spark task failed: {raised.group(0)}: the executors' Python lacks what "
            "lwbatch needs; point PYSPARK_PYTHON (or spark.pyspark.python) at an "
            "environment with lwbatch installed, on every executor"
        )
    logged = f" (Spark's log: {log_path})" if log_path else ""
    if raised is not None and type(exc).__name__ == "PythonException":
        return SparkJobError(f"a Spark task failed: {raised.group(0)}{logged}")
    return SparkJobError(f"the Spark job failed: {_first_line(exc)}{logged}")


def _first_line(exc: BaseException) -> str:
    java = getattr(exc, "java_exception", None)
    text = str(java.getMessage()) if java is not None else str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _report(
    written: Any,
    where: str,
    models: list[str],
    counted: Any,
    elapsed: float,
    budget: Budget,
    concurrency: int | None,
) -> RunReport:
    # What the output holds is read back from it; the tasks' counts are of the attempts
    # that succeeded (Spark drops a failed attempt's accumulator updates), and of the
    # failed ones as far as their last commit to the progress area tells.
    stats = RunStats()
    counts = counted.values()
    for name in ("rows_read", "invalid_rows", "duplicate_rows", "distinct_revisions"):
        setattr(stats, name, counts[name])
    failed = counts["requests_failed_attempts"]
    stats.requests_sent = counts["requests_sent"] + failed
    stats.peak_in_flight = counts["peak_in_flight"]
    stats.requests_by_outcome.update(counted.outcomes())
    stats.latency = counted.latency()
    stats.cached.update(counted.cached())
    stats.first_invalid = counted.first_invalid()
    sending = counted.sending()
    if sending is not None:
        stats.first_sent, stats.last_sent = sending
    stats.rows_written = written.count()
    tally = OutputTally(tuple(models))
    tally.rows = stats.rows_written
    for index, model in enumerate(models):
        for row in written.groupBy(f"`{model}`.error").count().collect():
            error, count = row[0], int(row[1])
            # The output's cells, answered by this run or kept from an earlier one.
            if error is None:
                stats.scored[model] = tally.scored[model] = count
                continue
            stats.errors[(model, str(error))] = count
            if error == INVALID_INPUT:
                tally.invalid_rows += count if index == 0 else 0
            else:
                tally.errors[(model, str(error))] = count
    report = RunReport.from_stats(
        stats,
        models=tuple(models),
        elapsed=elapsed,
        budget=budget.describe(),
        budget_rate=budget.rate,
        concurrency="adaptive, per task" if concurrency is None else f"{concurrency} per task",
        output=where,
    )
    return replace(
        report.with_output(tally),
        answers_resumed=counts["answers_resumed"],
        requests_failed_attempts=failed,
    )
