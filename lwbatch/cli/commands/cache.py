"""`lwbatch cache`: inspect, export or prune a score cache."""

from __future__ import annotations

from pathlib import Path

import click
import cloup

from lwbatch.errors import UsageError


@cloup.group()
def cache() -> None:
    """Inspect, export or prune a score cache (--cache)."""


_CACHE_PATH = click.argument("path", metavar="CACHE", type=click.Path(path_type=Path))


@cache.command("stats")
@_CACHE_PATH
def cache_stats(path: Path) -> None:
    """Entries per model: the trusted version's, and older ones no run uses again."""
    from lwbatch.cache import SqliteScoreCache

    store = SqliteScoreCache(path, read_only=True)
    try:
        entries = store.models()
    finally:
        store.close()
    width = max([len("model"), *(len(e.model) for e in entries)])
    lines = [f"{'model':<{width}}  {'version':<12} {'entries':>12} {'older versions':>15}"]
    lines += [
        f"{e.model:<{width}}  {e.version or '-':<12} {e.trusted:>12,} {e.stale:>15,}"
        for e in entries
    ]
    total = sum(e.trusted for e in entries)
    stale = sum(e.stale for e in entries)
    lines.append(
        f"{path}: {total:,} entries in use, {stale:,} of older versions, "
        f"{_size_with_wal(path) / 1e6:.1f} MB"
    )
    click.echo("\n".join(lines))


@cache.command("export")
@_CACHE_PATH
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Parquet file to write.",
)
@click.option("--all-versions", is_flag=True, help="Also the entries of older model versions.")
def cache_export(path: Path, output: Path, all_versions: bool) -> None:
    """Write the entries to a Parquet file (model, model_version, wiki, rev_id, prediction
    as JSON text, probability, error, error_message)."""
    from lwbatch.cache import EXPORT_SCHEMA, SqliteScoreCache
    from lwbatch.durability.atomic import write_parquet_atomic

    store = SqliteScoreCache(path, read_only=True)
    try:
        rows = write_parquet_atomic(
            output, EXPORT_SCHEMA, store.export(trusted_only=not all_versions)
        )
    finally:
        store.close()
    click.echo(f"{output}: {rows:,} entries")


@cache.command("prune")
@_CACHE_PATH
@click.option("--model", "model", help="Remove every entry of this model instead.")
def cache_prune(path: Path, model: str | None) -> None:
    """Remove the entries of older model versions (which no run uses again), or every
    entry of one model."""
    from lwbatch.cache import SqliteScoreCache

    store = SqliteScoreCache(path, must_exist=True)
    try:
        if model is not None:
            known = sorted(e.model for e in store.models())
            if model not in known:
                raise UsageError(
                    f"--model {model}: {path} holds no entries of it"
                    + (f" (it holds {', '.join(known)})" if known else " (it is empty)")
                )
        removed = store.prune(model=model)
    finally:
        store.close()
    click.echo(f"{path}: {removed:,} entries removed")


def _size_with_wal(path: Path) -> int:
    """The cache's bytes on disk, its write-ahead log included."""
    parts = (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
    return sum(p.stat().st_size for p in parts if p.exists())


__all__ = ["cache"]
