"""`lwbatch demo`: the shipped sample file, scored against an in-process emulator."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import pyarrow.parquet as pq

from lwbatch.cli.scoring import Reporting, score_and_report
from lwbatch.config import Endpoint
from lwbatch.resources import sample_path
from lwbatch.settings import Connection, Files, Pacing, RunSettings
from lwbatch.testing.emulator import EmulatorConfig, Latency, running

# Each row's own wiki's damaging and goodfaith models, and revertrisk for every wiki.
DEMO_MODELS = ("{wiki}-damaging", "{wiki}-goodfaith", "revertrisk-language-agnostic")


def run_demo(output: Path, *, quiet: bool = False) -> None:
    sample = sample_path()
    config = EmulatorConfig(latency=Latency("lognormal", 0.02, 0.6), track_pairs=False)
    with running(config) as (_, base_url):
        logging.getLogger("lwbatch").info(
            "scoring %s with %s against the Lift Wing emulator at %s",
            sample.name,
            ", ".join(DEMO_MODELS),
            base_url,
        )
        settings = RunSettings.of(
            DEMO_MODELS,
            rate="2000/s",
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            pacing=Pacing(concurrency=64, gc_control=True),
            files=Files(restart=True),
        )
        score_and_report(sample, output, settings, Reporting(quiet=quiet).applied())
    if not quiet:
        with pq.ParquetFile(output) as file:
            table = file.read()
        click.echo(f"\n{output} holds {table.num_rows:,} rows; the first three:", err=True)
        for row in table.slice(0, 3).to_pylist():
            parts = [f"lang={row['lang']}", f"rev_id={row['rev_id']}"]
            for model in DEMO_MODELS:
                cell = row[model]
                value = cell["error"] or cell["prediction"]
                parts.append(f"{model}={value}")
            click.echo("  " + "  ".join(parts), err=True)
