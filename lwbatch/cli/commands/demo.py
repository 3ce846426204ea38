"""`lwbatch demo`: the shipped sample, scored against an emulator in this process."""

from __future__ import annotations

from pathlib import Path

import click
import cloup


@cloup.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("lwbatch-demo.parquet"),
    show_default=True,
    help="Where to write the demo's scores.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def demo(output: Path, quiet: bool) -> None:
    """Score the shipped sample file against a local emulator, and show the result."""
    from lwbatch.cli.demo import run_demo

    run_demo(output, quiet=quiet)


__all__ = ["demo"]
