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
    help="Where to write the demo's scores (default: lwbatch-demo.parquet; with "
    "--follow, the directory lwbatch-demo-follow).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@click.option(
    "--follow",
    "follow_stream",
    is_flag=True,
    help="Show `lwbatch follow` instead: the emulator's event stream into a directory of parts.",
)
def demo(output: Path | None, quiet: bool, follow_stream: bool) -> None:
    """Score the shipped sample file against a local emulator, and show the result."""
    from lwbatch.cli.demo import run_demo, run_follow_demo

    if follow_stream:
        run_follow_demo(output or Path("lwbatch-demo-follow"), quiet=quiet)
    else:
        run_demo(output or Path("lwbatch-demo.parquet"), quiet=quiet)


__all__ = ["demo"]
