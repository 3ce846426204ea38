"""`lwbatch demo`: the shipped sample file, scored against an in-process emulator."""

from __future__ import annotations

import logging
import random
from importlib import resources
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq

from lwbatch.config import Budget, Endpoint, Rate
from lwbatch.emulator import EmulatorConfig, Latency, running

DEMO_MODELS = ("enwiki-damaging", "enwiki-goodfaith", "revertrisk-language-agnostic")
SAMPLE_NAME = "sample_revisions.parquet"
# Above the emulator's max_rev_id: the sample's "unknown revisions".
UNKNOWN_BASE = 2_100_000_000


def sample_path() -> Path:
    return Path(str(resources.files("lwbatch") / "data" / SAMPLE_NAME))


def write_sample(
    path: Path, *, distinct: int = 2_500, duplicates: int = 400, unknown: int = 12
) -> None:
    """The sample: real-looking enwiki/dewiki/frwiki rev_ids, duplicates, unknown ones."""
    rng = random.Random(2026)
    revs = rng.sample(range(1_100_000_000, 1_300_000_000), distinct)
    rows = [(r, rng.choices(["en", "de", "fr"], weights=[8, 1, 1])[0]) for r in revs]
    rows += [(UNKNOWN_BASE + i, "en") for i in range(unknown)]
    rows += rng.choices(rows, k=duplicates)
    rng.shuffle(rows)
    table = pa.table(
        {"rev_id": pa.array([r for r, _ in rows], pa.int64()), "lang": [lang for _, lang in rows]}
    )
    pq.write_table(table, path, compression="zstd")


def run_demo(output: Path, *, quiet: bool = False) -> None:
    from lwbatch.cli import _score_and_report

    sample = sample_path()
    config = EmulatorConfig(latency=Latency("lognormal", 0.02, 0.6), track_pairs=False)
    with running(config) as (_, base_url):
        logging.getLogger("lwbatch").info(
            "scoring %s with %s against the Lift Wing emulator at %s",
            sample.name,
            ", ".join(DEMO_MODELS),
            base_url,
        )
        _score_and_report(
            sample,
            output,
            models=list(DEMO_MODELS),
            endpoint=Endpoint(base_url=base_url),
            budget=Budget.from_rate(Rate(2000, 1.0)),
            concurrency=64,
            restart=True,
            report_path=None,
            quiet=quiet,
        )
    if not quiet:
        table = pq.read_table(output)
        click.echo(f"\n{output} holds {table.num_rows:,} rows; the first three:", err=True)
        for row in table.slice(0, 3).to_pylist():
            parts = [f"rev_id={row['rev_id']}"]
            for model in DEMO_MODELS:
                cell = row[model]
                value = cell["error"] or cell["prediction"]
                parts.append(f"{model}={value}")
            click.echo("  " + "  ".join(parts), err=True)
