"""`lwbatch score --engine spark`: the same scoring inside a Spark job, for people who
do not write Spark code. INPUT is a Parquet file or directory (or a table), OUTPUT a
Parquet directory, written beside its final name and renamed into place when the job
is done (or a table)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import click

from lwbatch.cli.messages import for_cli
from lwbatch.cli.scoring import write_json
from lwbatch.config import Budget, Endpoint, Tier, Token
from lwbatch.engine.stats import RunReport, RunStats
from lwbatch.errors import InputError, UsageError


def score_on_spark(
    input_path: Path | None,
    output: Path | None,
    *,
    input_table: str | None,
    output_table: str | None,
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
    if input_path is not None and not input_path.exists():
        raise InputError("no such file or directory", path=input_path)
    if output is not None and output.exists() and not restart:
        raise UsageError(
            f"--output {output} exists; pass --restart to replace it, or choose another output"
        )
    builder = SparkSession.builder.appName("lwbatch")
    if master:
        builder = builder.master(master)
    session = (
        builder.enableHiveSupport().getOrCreate()
        if input_table or output_table
        else (builder.getOrCreate())
    )
    if output_table is not None and session.catalog.tableExists(output_table) and not restart:
        raise UsageError(
            f"--output-table {output_table} exists; pass --restart to replace it, "
            "or choose another table"
        )
    df = session.table(input_table) if input_table else session.read.parquet(str(input_path))
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
    # The one action on `scored`: each key is scored once.
    if output_table is not None:
        scored.write.mode("overwrite" if restart else "errorifexists").saveAsTable(output_table)
        written = session.table(output_table)
        where = output_table
    else:
        assert output is not None
        staging = output.with_name(f".{output.name}.spark-{os.getpid()}")
        try:
            scored.write.parquet(str(staging))
            if output.exists():
                shutil.rmtree(output) if output.is_dir() else output.unlink()
            os.replace(staging, output)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        written = session.read.parquet(str(output))
        where = str(output)
    report = _report(written, where, models, counted.values(), time.monotonic() - started, budget)
    if not quiet:
        click.echo(for_cli(report.render()), err=True)
    if report_path is not None:
        write_json(report_path, report.to_dict())


def _report(
    written: Any,
    where: str,
    models: list[str],
    counts: dict[str, int],
    elapsed: float,
    budget: Budget | None,
) -> RunReport:
    # Scores and errors are read back from the output: the tasks' own counts would
    # include a retried task's work twice.
    stats = RunStats()
    for name, value in counts.items():
        setattr(stats, name, value)
    stats.rows_written = written.count()
    for model in models:
        for row in written.groupBy(f"`{model}`.error").count().collect():
            error, count = row[0], int(row[1])
            if error is None:
                stats.scored[model] = count
            else:
                stats.errors[(model, str(error))] = count
    described = budget.describe() if budget is not None else "the tier's"
    return RunReport.from_stats(
        stats,
        models=tuple(models),
        elapsed=elapsed,
        budget=described,
        budget_rate=budget.rate if budget is not None else 0.0,
        concurrency="adaptive, per task",
        output=where,
    )
