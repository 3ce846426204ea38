"""File in, file out: the run the CLI, the demo and `score_file` share.

With `journal=True` (the CLI's default) the run is resumable: see lwbatch/durability/journal.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from lwbatch.durability.journal import Journal, fingerprint
from lwbatch.engine.scorer import Scorer
from lwbatch.engine.stats import RunReport
from lwbatch.errors import IncompleteRunError, InputError, Interrupted, UsageError
from lwbatch.io.parquet_sink import ParquetSink
from lwbatch.io.sources import DEFAULT_BATCH_ROWS, Source
from lwbatch.protocol.catalog import default_catalog
from lwbatch.results import InvalidRow, Revision

log = logging.getLogger("lwbatch")
_OUTPUT_SUFFIXES = (".parquet", ".pq")
DEFAULT_GRACE = 10.0
Progress = Callable[[int], None]


def score_file(
    input: Path | str, output: Path | str, *, models: Sequence[str], **options: Any
) -> RunReport:
    """Score every rev_id of `input` with `models` into the Parquet file `output`.

    `options` are those of :func:`score_file_async` (id_column, lang, journal, restart,
    retry_failed, progress, ...) and :class:`~lwbatch.Scorer` (endpoint, token, tier,
    budget, concurrency, timeout, ...). Returns the run's report. The output appears
    only when the run completes; on any error it is left as it was.
    """
    return anyio.run(partial(score_file_async, input, output, models=models, **options))


async def score_file_async(
    input: Path | str,
    output: Path | str,
    *,
    models: Sequence[str],
    id_column: str = "rev_id",
    lang: str = "en",
    journal: bool = True,
    restart: bool = False,
    retry_failed: bool = True,
    handle_signals: bool = False,
    grace: float = DEFAULT_GRACE,
    progress: Progress | None = None,
    on_start: Callable[[Source, Scorer], None] | None = None,
    on_send: Callable[[float], None] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    **scorer_options: Any,
) -> RunReport:
    """The async form of :func:`score_file`.

    journal: keep durable progress beside the output so a rerun resumes (and a crash
    loses nothing); restart: discard such progress (and replace a finished output);
    retry_failed: on resume, ask again what failed transiently last time;
    handle_signals: on SIGINT/SIGTERM stop taking work, wait up to `grace` seconds for
    requests in flight, save progress and raise :class:`Interrupted`.
    """
    input_path, output_path = _check_paths(Path(input), Path(output))
    names = [spec.name for spec in default_catalog().resolve_all(models)]
    source = Source(input_path, id_column=id_column, default_lang=lang, batch_rows=batch_rows)
    store = (
        Journal(
            output_path,
            models=names,
            manifest={"input": fingerprint(input_path), "id_column": id_column, "lang": lang},
        )
        if journal
        else None
    )

    def sent(now: float) -> None:
        if store is not None:
            store.record_grant(time.time())
        if on_send is not None:
            on_send(now)

    scorer = Scorer(
        names,
        default_lang=lang,
        on_send=sent,
        on_answer=store.record_answers if store is not None else None,
        **scorer_options,
    )
    sink = ParquetSink(output_path, scorer.specs, journal=store, open_answers=scorer.open_answers)
    sink.open()
    state = None
    if store is not None:
        state = store.open(
            restart=restart,
            retry_failed=retry_failed,
            ledger_keep=max((w.requests for w in scorer.budget.windows), default=0),
        )
        if state.resumed:
            log.info(
                "resuming: %s rows done earlier, %s revisions with some answers%s",
                f"{state.rows_done:,}",
                f"{len(state.partial):,}",
                f", {state.retried:,} transient failures to ask again" if state.retried else "",
            )
    if on_start is not None:
        on_start(source, scorer)
    stopping = _SignalStop(scorer, grace, store) if handle_signals else None
    try:
        async with scorer:
            if stopping is not None:
                stopping.install()
            done = 0
            async for row in scorer.score(_read(source), resume=state):
                sink.write(row)
                if progress is not None:
                    finished = (
                        scorer.rows_emitted
                        + scorer.stats.duplicate_rows
                        + scorer.stats.rows_resumed
                    )
                    progress(finished - done)
                    done = finished
        if scorer.stopped:
            sink.suspend()
            signum = stopping.signum if stopping is not None and stopping.signum else signal.SIGINT
            where = store.dir if store is not None else output_path
            raise Interrupted(
                f"stopped by {signal.Signals(signum).name}; progress is saved in {where}: "
                "rerun the same command to resume",
                signal_number=int(signum),
            )
        stats = scorer.stats
        if stats.invalid_rows and not stats.distinct_revisions:
            sink.abort()
            if store is not None:
                store.remove()
            raise InputError(
                f"no row has a usable {id_column!r} ({stats.invalid_rows:,} rows, none a positive "
                "integer); check --id-column and the file",
                path=input_path,
            )
        # Accounting: every distinct key and every invalid row ends in exactly one row.
        sink.commit(expected_rows=stats.distinct_revisions + stats.invalid_rows)
    except Interrupted:
        raise
    except IncompleteRunError as exc:
        # Keep what came out (a journal segment) and every answer: a rerun completes it.
        sink.suspend()
        raise IncompleteRunError(
            written=exc.written,
            expected=exc.expected,
            saved_in=store.dir if store is not None else None,
        ) from None
    except BaseException:
        sink.abort()
        # A run that failed before any answer (bad input mid-file, 401 at once, every
        # model undeployed) leaves nothing to resume, and nothing to refuse a fix with.
        if store is not None and store.dir.exists() and not store.holds_work():
            store.remove()
        raise
    finally:
        if stopping is not None:
            stopping.uninstall()
    scorer.stats.rows_written = sink.rows_written
    report = scorer.report(output=str(output_path))
    if scorer.stats.invalid_rows:
        log.warning(
            "%s rows of %s have no usable rev_id; they are in the output with error invalid_input",
            f"{scorer.stats.invalid_rows:,}",
            input_path,
        )
    return report


class _SignalStop:
    """First SIGINT/SIGTERM: stop gracefully. Second: leave at once (the journal is safe)."""

    def __init__(self, scorer: Scorer, grace: float, store: Journal | None) -> None:
        self.scorer = scorer
        self.grace = grace
        self.store = store
        self.signum: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        self._loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(signum, self._received, signum)

    def uninstall(self) -> None:
        if self._loop is not None:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._loop.remove_signal_handler(signum)
            self._loop = None

    def _received(self, signum: int) -> None:
        if self.signum is not None:
            # Every answer is already in the journal (appended, then fsynced), and
            # segments appear by rename: leaving now cannot corrupt anything.
            log.warning("second signal: exiting now; rerun the same command to resume")
            os._exit(128 + signum)
        self.signum = signum
        log.warning(
            "%s: finishing %d requests in flight (up to %gs), then saving progress; "
            "press Ctrl-C again to quit at once",
            signal.Signals(signum).name,
            self.scorer.in_flight,
            self.grace,
        )
        assert self._loop is not None
        self._task = self._loop.create_task(self.scorer.stop(self.grace))


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
