"""File in, file out: the run the CLI, the demo and `score_file` share."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from lwbatch.engine import Scorer
from lwbatch.errors import UsageError
from lwbatch.results import InvalidRow, Revision
from lwbatch.sinks import ParquetSink
from lwbatch.sources import DEFAULT_BATCH_ROWS, Source
from lwbatch.stats import RunReport

log = logging.getLogger("lwbatch")
_OUTPUT_SUFFIXES = (".parquet", ".pq")
Progress = Callable[[int], None]


def score_file(
    input: Path | str, output: Path | str, *, models: Sequence[str], **options: Any
) -> RunReport:
    """Score every rev_id of `input` with `models` into the Parquet file `output`.

    `options` are those of :func:`score_file_async` (id_column, lang, progress) and
    :class:`~lwbatch.Scorer` (endpoint, token, tier, budget, concurrency, timeout, ...).
    Returns the run's report. The output appears only when the run completes; on any
    error it is left as it was.
    """
    return anyio.run(partial(score_file_async, input, output, models=models, **options))


async def score_file_async(
    input: Path | str,
    output: Path | str,
    *,
    models: Sequence[str],
    id_column: str = "rev_id",
    lang: str = "en",
    progress: Progress | None = None,
    on_start: Callable[[Source, Scorer], None] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    **scorer_options: Any,
) -> RunReport:
    input_path, output_path = _check_paths(Path(input), Path(output))
    # Everything that can be refused is checked before the first request.
    scorer = Scorer(models, default_lang=lang, **scorer_options)
    source = Source(input_path, id_column=id_column, default_lang=lang, batch_rows=batch_rows)
    sink = ParquetSink(output_path, scorer.specs).open()
    if on_start is not None:
        on_start(source, scorer)
    try:
        async with scorer:
            done = 0
            async for row in scorer.score(_read(source)):
                sink.write(row)
                if progress is not None:
                    finished = scorer.rows_emitted + scorer.stats.duplicate_rows
                    progress(finished - done)
                    done = finished
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    scorer.stats.rows_written = sink.rows_written
    return scorer.report(output=str(output_path))


def _check_paths(input_path: Path, output_path: Path) -> tuple[Path, Path]:
    if output_path.suffix.lower() not in _OUTPUT_SUFFIXES:
        raise UsageError(f"--output {output_path}: lwbatch writes Parquet; name the file *.parquet")
    if output_path.exists() and input_path.exists() and output_path.samefile(input_path):
        raise UsageError(f"--output {output_path} is the input file; choose another output path")
    return input_path, output_path


async def _read(source: Source) -> AsyncIterator[list[Revision | InvalidRow]]:
    # Parsing a batch is CPU work in pyarrow; a thread keeps the event loop serving.
    batches = source.batches()
    while (batch := await anyio.to_thread.run_sync(next, batches, None)) is not None:
        yield batch
