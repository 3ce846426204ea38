"""The CLI's scoring run: a progress bar around the library call, then the summary."""

from __future__ import annotations

import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from lwbatch.errors import OutputError, UsageError

log = logging.getLogger("lwbatch")


def score_and_report(
    input_path: Path,
    output: Path,
    *,
    report_path: Path | None,
    quiet: bool,
    warn_no_contact: bool = False,
    **options: Any,
) -> None:
    from tqdm import tqdm

    from lwbatch.run import score_file

    if report_path is not None and not report_path.parent.is_dir():
        raise UsageError(f"--report {report_path}: its directory does not exist")
    freeze_heap()
    bar = tqdm(
        unit="rev",
        desc="scoring",
        disable=quiet or not sys.stderr.isatty(),
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    )

    def started(source: Any, scorer: Any) -> None:
        # Warn only once everything was accepted, so a usage error stays one line.
        if warn_no_contact:
            log.warning(
                "no --contact given: Wikimedia asks API clients to name a contact in the "
                "User-Agent; set --contact or LWBATCH_CONTACT"
            )
        bar.reset(total=source.info.total_rows)

    try:
        report = score_file(input_path, output, progress=bar.update, on_start=started, **options)
    finally:
        bar.close()
    if not quiet:
        click.echo(report.render(), err=True)
    if report_path is not None:
        write_json(report_path, report.to_dict())


def write_json(path: Path, data: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    try:
        temp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the report ({exc.strerror})", path=path) from None


def freeze_heap() -> None:
    # A full collection walks every object pyarrow, aiohttp and friends allocated at
    # import: measured here, a 40-90 ms pause every ~9 s, which delays requests enough
    # for a server's sliding window to count N+1. Frozen objects are never scanned.
    gc.collect()
    gc.freeze()
