"""`lwbatch demo`: the shipped sample file, scored against an in-process emulator."""

from __future__ import annotations

import logging
from collections.abc import Callable
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
        _say(quiet)(
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


def run_follow_demo(output: Path, *, quiet: bool = False) -> None:
    """`lwbatch follow` on the emulator's stream: the last two minutes of enwiki and
    dewiki revisions (at 20 events a second), replayed at once into parts."""
    import time

    from lwbatch.cli.commands.follow import run_follow
    from lwbatch.streaming.core import Filters
    from lwbatch.streaming.session import Following, StreamSource

    models = ["{wiki}-damaging"]
    config = EmulatorConfig(latency=Latency("lognormal", 0.02, 0.6), track_pairs=False)
    with running(config) as (_, base_url):
        now_ms = int(time.time() * 1000)
        _say(quiet)(
            "following the emulator's revision-create stream at %s: enwiki and dewiki "
            "revisions of the last two minutes, with %s",
            base_url,
            ", ".join(models),
        )
        settings = RunSettings.of(
            models,
            rate="2000/s",
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            pacing=Pacing(concurrency=64),
            files=Files(journal=False),
        )
        following = Following(
            settings,
            filters=Filters(wikis=frozenset({"enwiki", "dewiki"})),
            source=StreamSource(url=f"{base_url}/v2/stream/mediawiki.revision-create"),
            since=now_ms - 120_000,
            until=now_ms,
        )
        _clear_demo_output(output)
        run_follow(following, output, roll=0.5, roll_rows=100_000, quiet=quiet, every=3600.0)
    if not quiet:
        parts = sorted(output.glob("date=*/part-*.parquet"))
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
        click.echo(f"\n{output}/ holds {rows:,} rows in {len(parts)} parts; the first three:",
                   err=True)  # fmt: skip
        with pq.ParquetFile(parts[0]) as file:
            table = file.read()
        for row in table.slice(0, 3).to_pylist():
            cell = row["{wiki}-damaging"]
            click.echo(
                f"  wiki_db={row['wiki_db']}  rev_id={row['rev_id']}  "
                f"event_time={row['event_time']:%H:%M:%S.%f}  "
                f"damaging={cell['error'] or cell['prediction']}",
                err=True,
            )
        click.echo(
            "\nRead the directory while it grows, e.g. "
            f"pyarrow.dataset.dataset('{output}', partitioning='hive')",
            err=True,
        )


def _say(quiet: bool) -> Callable[..., None]:
    """The log call for the demo's opening line: info, or nothing shown with -q."""
    log = logging.getLogger("lwbatch")
    return log.debug if quiet else log.info


DEMO_MARK = ".lwbatch-demo"  # in a directory the follow demo made: safe to clear


def _clear_demo_output(output: Path) -> None:
    """Remove an earlier follow demo's output, and nothing else: a directory without the
    demo's mark (another follower's output, anything of yours) is refused. Then mark
    the new one."""
    from lwbatch.errors import UsageError

    if output.exists():
        if not output.is_dir():
            raise UsageError(f"`output` {output}: is a file; the follow demo writes a directory")
        if any(output.iterdir()) and not (output / DEMO_MARK).exists():
            raise UsageError(
                f"`output` {output}: is not an earlier follow demo's output; give the demo a "
                "new directory"
            )
        import shutil

        shutil.rmtree(output)
    output.mkdir(parents=True)
    (output / DEMO_MARK).touch()
