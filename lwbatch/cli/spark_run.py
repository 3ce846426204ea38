"""`lwbatch score --engine spark`: the same scoring inside a Spark job, for people who
do not write Spark code. INPUT is a Parquet file or directory, OUTPUT a Parquet
directory, written beside its final name and renamed into place when the job is done."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import click
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lwbatch.cli.messages import for_cli
from lwbatch.cli.scoring import write_json
from lwbatch.config import Budget, Endpoint, Tier, Token
from lwbatch.engine.stats import RunReport, RunStats
from lwbatch.errors import InputError, UsageError


def score_on_spark(
    input_path: Path,
    output: Path,
    *,
    master: str | None,
    slots: int | None,
    models: list[str],
    id_column: str,
    lang: str,
    wiki_column: str | None,
    endpoint: Endpoint,
    token: Token | None,
    contact: str | None,
    tier: Tier | None,
    budget: Budget | None,
    concurrency: int | None,
    timeout: float,
    restart: bool,
    report_path: Path | None,
    quiet: bool,
) -> None:
    try:
        from pyspark.sql import SparkSession

        from lwbatch import spark as lwspark
    except ImportError:
        raise UsageError("--engine spark needs PySpark: pip install 'lwbatch[spark]'") from None
    if not input_path.exists():
        raise InputError("no such file or directory", path=input_path)
    if output.exists() and not restart:
        raise UsageError(
            f"--output {output} exists; pass --restart to replace it, or choose another output"
        )
    staging = output.with_name(f".{output.name}.spark-{os.getpid()}")
    builder = SparkSession.builder.appName("lwbatch")
    if master:
        builder = builder.master(master)
    session = builder.getOrCreate()
    df = session.read.parquet(str(input_path))
    lang_col = "lang" if wiki_column is None and "lang" in df.columns else None
    counted = lwspark.counters(session)
    started = time.monotonic()
    scored = lwspark.score(
        df,
        models=models,
        rate=budget,
        tier=None if budget is not None else tier,
        id_col=id_column,
        lang_col=lang_col,
        wiki_col=wiki_column,
        lang=lang,
        slots=slots,
        endpoint=endpoint,
        token=token,
        contact=contact,
        concurrency=concurrency,
        timeout=timeout,
        counters=counted,
    )
    try:
        scored.write.parquet(str(staging))  # the one action: each key scored once
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report = _report(output, models, counted.values(), time.monotonic() - started, budget)
    if not quiet:
        click.echo(for_cli(report.render()), err=True)
    if report_path is not None:
        write_json(report_path, report.to_dict())


def _report(
    output: Path, models: list[str], counts: dict[str, int], elapsed: float, budget: Budget | None
) -> RunReport:
    # Scores and errors are read back from the output: the tasks' own counts would
    # include a retried task's work twice.
    table = pq.read_table(output, columns=models)
    stats = RunStats()
    for name, value in counts.items():
        setattr(stats, name, value)
    stats.rows_written = table.num_rows
    for model in models:
        errors = table.column(model).combine_chunks().field("error")
        stats.scored[model] = errors.null_count  # no error: a score
        for error, count in _tally(errors).items():
            stats.errors[(model, error)] = count
    described = budget.describe() if budget is not None else "the tier's"
    return RunReport.from_stats(
        stats,
        models=tuple(models),
        elapsed=elapsed,
        budget=described,
        budget_rate=budget.rate if budget is not None else 0.0,
        concurrency="per task: adaptive",
        output=str(output),
    )


def _tally(errors: Any) -> dict[str, int]:
    counts = pc.value_counts(errors.drop_null())
    return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}
