"""`lwbatch score`: read the flags into settings values, then run the job here or on
Spark."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import cloup

from lwbatch.cli.options import (
    BUDGET,
    CONNECTION,
    INPUT,
    MODELS,
    OUTPUT,
    PACING,
    RESUME,
    Keys,
    budget_of,
    connection_of,
    files_of,
    flag,
    keep_columns_of,
    keys_of,
    models_of,
    pacing_of,
    positive,
    take,
    typed,
)
from lwbatch.cli.profile import CONFIG
from lwbatch.cli.scoring import DEFAULT_GRACE, Reporting, score_and_report
from lwbatch.errors import UsageError
from lwbatch.seams import Source
from lwbatch.settings import RunSettings

REPORTING = cloup.option_group(
    "Progress and report",
    flag(
        "--report",
        "report_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Also write the run summary as JSON to this file.",
    ),
    flag(
        "--quiet",
        "-q",
        is_flag=True,
        help="No progress bar, summary or info lines; warnings and errors still show.",
    ),
    flag(
        "--log-json",
        is_flag=True,
        help="For schedulers: progress, log lines and the final summary as JSON lines on stderr.",
    ),
    flag(
        "--progress-every",
        type=float,
        metavar="SECONDS",
        help="Seconds between progress lines when stderr is not a terminal (default 60; "
        "5 with --log-json).",
    ),
    flag(
        "--grace",
        type=float,
        default=DEFAULT_GRACE,
        show_default=True,
        sets="grace",
        help="On Ctrl-C/SIGTERM, seconds to wait for requests in flight before saving and exiting.",
    ),
)
SPARK = cloup.option_group(
    "Spark (with --engine spark)",
    flag(
        "--engine",
        type=click.Choice(["local", "spark"]),
        default="local",
        show_default=True,
        help="Where to score: this process, or a Spark job (INPUT a Parquet file or "
        "directory, --output a Parquet directory; pip install 'lwbatch[spark]').",
    ),
    flag("--master", help="The Spark master (local[4], yarn)."),
    flag(
        "--slots",
        type=int,
        sets="slots",
        help="Task slots that run at once, which share the budget (default: Spark's "
        "default parallelism).",
    ),
    flag("--input-table", help="Read this table instead of INPUT."),
    flag("--output-table", help="Write this table instead of --output."),
    flag(
        "--progress",
        "progress_dir",
        metavar="DIR",
        sets="progress",
        help="Where the tasks commit their answers as they come, so that running the "
        "same command again pays only for what is unanswered (default: beside --output; "
        "needed with --output-table). Removed once the output is in place; --restart "
        "discards it.",
    ),
    flag(
        "--commit-every",
        type=float,
        metavar="SECONDS",
        sets="commit_every",
        help="How often each task commits its answers to the progress area (default 5): "
        "a killed job pays again for at most this long of answers.",
    ),
    flag(
        "--spark-log",
        type=click.Choice(["ERROR", "WARN", "INFO", "DEBUG"], case_sensitive=False),
        help="Show Spark's and the JVM's log lines from this level on (default: none; "
        "they go to a log file, named if the job fails).",
    ),
)
# Flags only the local engine reads, and why a Spark job has no use for them.
_LOCAL_ONLY = {
    "grace": "Spark itself stops its tasks",
    "retry_failed": "a Spark job's rerun asks failures of the service again by itself",
    "keep_columns": "a Spark job writes the key and the scores",
    "log_json": "a Spark job's progress lines are plain log lines",
    "no_shared_budget": "a Spark job splits its budget between its task slots",
    "state_dir": "a Spark job splits its budget between its task slots",
    "input_format": "a Spark job reads Parquet",
    "credentials": "give the Spark job a token (LIFTWING_TOKEN or --token-file) that lasts the job",
}


def reporting_of(given: dict[str, Any]) -> Reporting:
    report_path, quiet, log_json, every, grace = take(
        given, "report_path", "quiet", "log_json", "progress_every", "grace"
    )
    if every is not None and not every > 0:
        raise UsageError(f"--progress-every must be > 0, got {every}")
    if not grace >= 0:
        raise UsageError(f"--grace must be >= 0 seconds, got {grace}")
    return Reporting(
        report_path=report_path,
        quiet=quiet,
        log_json=log_json,
        progress_every=every,
        grace=grace,
    ).applied()


@cloup.command()
@cloup.argument("input_paths", metavar="[INPUT]...", nargs=-1)
@MODELS
@OUTPUT
@INPUT
@CONNECTION
@BUDGET
@PACING
@RESUME
@REPORTING
@SPARK
@cloup.option_group("Profile", CONFIG)
def score(input_paths: tuple[str, ...], **given: Any) -> None:
    """Score the rev_ids of INPUT with every model into one output file.

    INPUT: Parquet, CSV/TSV or JSON-lines files (optionally .gz), a directory of Parquet
    files, a glob ('data/*.parquet'), several of these, or - for standard input; all
    are read as one input.

    \b
    Example:
      export LIFTWING_TOKEN=...      # optional; anonymous without it
      lwbatch score revisions.parquet -o scores.parquet \\
          -m enwiki-damaging -m enwiki-goodfaith -m revertrisk-language-agnostic \\
          --contact me@example.org
    \b
    A data-lake table, each row scored by its own wiki's model:
      lwbatch score revisions.parquet -o scores.parquet \\
          --id-column revision_id -m '{wiki}-damaging' -m revertrisk-language-agnostic
    \b
    In place of ORES' score_revisions (JSON lines in and out):
      cat revs.jsonl | lwbatch score - -o scores.jsonl -m enwiki-damaging
    """
    if given["engine"] == "spark":
        _score_on_spark(input_paths, given)
        return
    reporting = reporting_of(given)
    output, keep, input_format = take(given, "output", "keep_columns", "input_format")
    _refuse_spark_flags(given)
    if not input_paths:
        raise UsageError("give INPUT, the file(s) of rev_ids to score (- for standard input)")
    if output is None:
        raise UsageError("give --output, the file to write (*.parquet, *.jsonl or *.json)")
    models, catalog = models_of(given)
    keys = keys_of(given)
    connection = connection_of(given, catalog)
    budget = budget_of(given)
    pacing = pacing_of(given, unlimited=budget["rate"] == "unlimited")
    settings = RunSettings.of(
        models, **budget, **keys, connection=connection, pacing=pacing, files=files_of(given)
    )
    assert not given, f"flags read by no group: {sorted(given)}"
    with open_cli_inputs(
        input_paths, Path(output), input_format, keys, keep_columns_of(keep)
    ) as source:
        score_and_report(
            source,
            Path(output),
            settings,
            reporting,
            warn_no_contact=connection.endpoint.is_external_gateway and not connection.contact,
        )


def _refuse_spark_flags(given: dict[str, Any]) -> None:
    names = ("master", "slots", "input_table", "output_table", "progress_dir", "spark_log")
    given_too = [v for v in take(given, *names, "commit_every") if v is not None]
    take(given, "engine")
    if given_too:
        raise UsageError(
            "--master, --slots, --input-table, --output-table, --progress, --commit-every "
            "and --spark-log are for --engine spark"
        )


def _score_on_spark(input_paths: tuple[str, ...], given: dict[str, Any]) -> None:
    from lwbatch.cli.spark_run import SparkPlaces, score_on_spark

    context = click.get_current_context()
    for name, why in _LOCAL_ONLY.items():
        # A profile's settings are for whichever engine reads them.
        if typed(name):
            param = next(p for p in context.command.params if p.name == name)
            longs = [o for o in param.opts if o.startswith("--")]
            spelt = param.secondary_opts[0] if given[name] is False else longs[0]
            raise UsageError(f"{spelt} is for the local engine: {why}")
    if given["output_format"] not in (None, "parquet"):
        raise UsageError(
            f"--format {given['output_format']} is for the local engine: a Spark job writes Parquet"
        )
    places = SparkPlaces.of(input_paths, *take(given, "output", "input_table", "output_table"))
    master, slots, restart, progress, spark_log, cache, every = take(
        given, "master", "slots", "restart", "progress_dir", "spark_log", "cache", "commit_every"
    )
    reporting = reporting_of(given)
    models, catalog = models_of(given)
    keys = keys_of(given)
    connection = connection_of(given, catalog)
    settings = RunSettings.of(
        models,
        **budget_of(given),
        **keys,
        connection=connection,
        # A Spark job splits its budget between its task slots: nothing to share.
        pacing=replace(pacing_of(given), share=False, state_dir=None, gc_control=False),
    )
    score_on_spark(
        places,
        settings,
        reporting,
        master=master,
        slots=positive("--slots", slots),
        restart=restart,
        progress=progress,
        cache=cache,
        commit_every=every,
        spark_log=spark_log,
        warn_no_contact=connection.endpoint.is_external_gateway and not connection.contact,
    )


@contextmanager
def open_cli_inputs(
    paths: tuple[str, ...],
    output: Path | None,
    input_format: str | None,
    keys: Keys,
    keep: list[str] | str | None = None,
) -> Iterator[Source]:
    """The one source of every INPUT. Standard input is spooled to a hidden folder beside
    the output (it can be large), named so that the next run on that output sweeps it
    away if this one is killed; removed at the end. Without an output (plan), to the
    system's temporary folder."""
    from lwbatch.io.inputs import STDIN, open_inputs

    with ExitStack() as stack:
        spool_dir = None
        if STDIN in paths:
            if output is not None and output.parent.is_dir():
                spool_dir = output.with_name(f".{output.name}.stdin.{os.getpid()}.tmp")
                spool_dir.mkdir(exist_ok=True)
                stack.callback(shutil.rmtree, spool_dir, True)
            else:
                spool_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        yield open_inputs(
            paths,
            input_format=input_format,
            stdin=sys.stdin.buffer,
            spool_dir=spool_dir,
            keep_columns=keep,
            **keys,
        )


__all__ = ["open_cli_inputs", "score"]
