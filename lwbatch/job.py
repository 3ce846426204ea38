"""One run of an input into an output: prepare, run, finish, or fail.

    Source ──> Scorer ──> RowBuffer ──> Journal segments ──(fold at the end)──> Sink
                                   └──> Sink directly, without a journal

A :class:`Job` owns its resources (the sink, the journal, the score cache, the shared
budget, the output lock) in one exit stack. With a journal (the default) the run is
resumable and a crash loses no answer (lwbatch/durability/journal.py). Either way the
sink commits atomically, and only when every distinct key and every invalid row has
exactly one row.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
import pyarrow as pa

from lwbatch.cache import SqliteScoreCache
from lwbatch.durability.commits import Commits
from lwbatch.durability.grants import GrantTimes
from lwbatch.durability.journal import FileJournal
from lwbatch.durability.lock import OutputLock
from lwbatch.engine.pipeline import OnAnswer, Pipeline
from lwbatch.engine.resume import ResumeState
from lwbatch.engine.scorer import Scorer
from lwbatch.engine.stats import RunReport
from lwbatch.errors import IncompleteRunError, InputError, Interrupted, RestartNeeded, UsageError
from lwbatch.identity import Identity
from lwbatch.io.inputs import ManySource, open_for
from lwbatch.io.rows import RowBuffer
from lwbatch.io.sinks import Tallied, for_rows, open_sink
from lwbatch.io.sources import FileSource
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import InvalidRow, Revision
from lwbatch.seams import Journal, ReadableSink, ScoreCache, Sink, Source
from lwbatch.settings import RunSettings
from lwbatch.threads import on_thread
from lwbatch.wikis import wikipedia

log = logging.getLogger("lwbatch")
# Rows per journal segment (or per Parquet row group without a journal).
ROWS_PER_SEGMENT = 8_192
# Rows held as Python values before they become Arrow (see RowBuffer). Building them
# holds the GIL throughout (about 1 ms for 256 rows of 3 models, 4 ms for 1,024), and
# the event loop waits that long for it.
ROWS_PER_SEAL = 256
Input = Path | str | Sequence[Path | str] | Source
Output = Path | str | Sink


class Job:
    """One run of `input` into `output` with `settings`."""

    def __init__(self, input: Input, output: Output, settings: RunSettings) -> None:
        self.settings = settings
        self._input = input
        self._output = output
        self.scorer: Scorer | None = None
        self.source: Source | None = None
        self.journal: Journal | None = None
        self._sink: Tallied | None = None
        self._opened = False  # the journal holds the output's lock

    async def run(self) -> RunReport:
        """Score the whole input; the report. Raises :class:`~lwbatch.Interrupted` (its
        progress saved) when stopped, and leaves the output as it was on any error."""
        async with AsyncExitStack() as stack:
            try:
                await self._prepare(stack)
                await self._score()
                # Folding the journal into the output reads and writes every row.
                report = await on_thread(self._finish)
            except BaseException as exc:
                self._fail(exc)
                raise
        return report

    # -- prepare ---------------------------------------------------------------------
    async def _prepare(self, stack: AsyncExitStack) -> None:
        # File work (opening the input and the output, reading a journal back) happens
        # on a worker thread: the event loop has nothing else to do yet, but a caller's
        # loop (lwbatch.score_async, a notebook) may.
        settings = self.settings
        specs = settings.connection.models().resolve_all(settings.models)
        await on_thread(partial(self._open_files, stack, specs))
        identity = await Identity.resolve(
            settings.connection, settings.pacing, budget=settings.budget, tier=settings.tier
        )
        identity.warn_if_doubtful()
        ledger = await identity.open_ledger(settings.pacing)
        if ledger is not None:
            stack.push_async_callback(ledger.aclose)
        self.scorer = scorer = Scorer(
            settings.models,
            lang=self._lang,
            connection=settings.connection,
            pacing=settings.pacing,
            cache=self._cache,
            identity=identity,
            ledger=ledger,
        )
        await on_thread(partial(self._resume, stack, scorer, ledger is not None))

    def _open_files(self, stack: AsyncExitStack, specs: list[ModelSpec]) -> None:
        settings, files = self.settings, self.settings.files
        # `en`, ` en` and `enwiki` are one run's `lang`: the manifest keeps the code.
        self._lang = lang = wikipedia(settings.lang).lang
        self.source = source = open_for(
            self._input,
            specs,
            id_column=settings.id_column,
            lang=lang,
            wiki_column=settings.wiki_column,
            batch_rows=files.batch_rows,
            keep_columns=files.keep_columns,
            input_format=files.input_format,
        )
        kept: list[pa.Field] = list(getattr(source, "kept_fields", ()))
        self._cache = self._open_cache(stack)
        output = self._output
        sink = (
            output
            if isinstance(output, Sink)
            else open_sink(
                output, input=_paths_of(source), format=files.format, specs=specs, lang=lang
            )
        )
        self._buffer = RowBuffer(specs, source.key_layout, kept, detail=True)
        self._readable = sink.read_back if isinstance(sink, ReadableSink) else None
        self._sink = Tallied(for_rows(sink), [s.name for s in specs])
        self._sink.open(self._buffer.schema)
        self.journal = self._journal(source, [s.name for s in specs], lang, kept)
        self._commits = (
            Commits(self.journal, then=self.settings.hooks.on_answer)
            if self.journal is not None
            else None
        )

    def _resume(self, stack: AsyncExitStack, scorer: Scorer, shared: bool) -> None:
        output = self._output
        self._state = self._open_journal(self._readable, scorer)
        self._watch(stack, scorer, shared=shared)
        if self.journal is None and not isinstance(output, Sink):
            # Without a journal the output still gets its lock: a journaled run on the
            # same output would otherwise sweep this run's temporary file as stale.
            lock = OutputLock(Path(output))
            lock.acquire()
            stack.callback(lock.release)

    def _open_cache(self, stack: AsyncExitStack) -> ScoreCache | None:
        cache = self.settings.files.cache
        if not isinstance(cache, Path):
            return cache
        assert self.source is not None
        for named in [*_paths_of(self.source), str(self._output)]:
            # A cache file that is also the input or the output would destroy one of them.
            if cache.resolve() == Path(named).resolve():
                raise UsageError(
                    f"`cache` {cache} is also the input or the output; give the cache a file "
                    "of its own"
                )
        owned = SqliteScoreCache(cache)
        stack.callback(owned.close)
        return owned

    def _journal(
        self, source: Source, models: list[str], lang: str, kept: list[pa.Field]
    ) -> Journal | None:
        journal, output = self.settings.files.journal, self._output
        if not isinstance(journal, bool):
            return journal
        if not journal:
            return None
        if isinstance(output, Sink):
            raise UsageError(
                "`journal=True` keeps progress beside an output path; for a Sink object pass "
                "a Journal (e.g. FileJournal) as `journal`, or `journal=False`"
            )
        layout = source.key_layout
        return FileJournal(
            Path(output),
            models=models,
            layout=layout,
            manifest={
                "input": source.fingerprint(),
                "id_column": self.settings.id_column,
                "lang": lang,
                "wiki_column": layout.wiki_column,
                # None, not [], without kept columns: journals from before agree.
                "keep_columns": [f.name for f in kept] or None,
            },
            disk=self.settings.files.disk,
        )

    def _open_journal(self, readable: object, scorer: Scorer) -> ResumeState | None:
        journal, files, output = self.journal, self.settings.files, self._output
        if journal is None:
            return None
        previous = (
            readable
            if readable is not None
            else None
            if isinstance(output, Sink)
            else partial(_unreadable, Path(output))
        )
        try:
            state = journal.open(
                restart=files.restart,
                retry_failed=files.retry_failed,
                ledger_keep=max((w.requests for w in scorer.budget.windows), default=0),
                previous=previous,  # type: ignore[arg-type]
            )
            self._opened = True
        except RestartNeeded as exc:
            if scorer.cache is None:
                raise
            # A grown input or another model list: restarting costs only what the cache
            # does not hold.
            raise UsageError(
                f"{exc}; with `restart=True` the answers `cache` holds are not asked again"
            ) from None
        if state.resumed:
            log.info(
                "resuming: %s rows done earlier, %s revisions with some answers%s",
                f"{state.rows_done:,}",
                f"{len(state.partial):,}",
                f", {state.retried:,} failures of the service to ask again"
                if state.retried
                else "",
            )
        return state

    def _watch(self, stack: AsyncExitStack, scorer: Scorer, *, shared: bool) -> None:
        """Grants go to the journal (and to the caller's hook); earlier ones count again."""
        hook = self.settings.hooks.on_send
        grants = None
        # Without a budget there is nothing for a rerun to count again: no grant log
        # (a write per request).
        if self._commits is not None and scorer.budget.windows:
            grants = GrantTimes(self._commits, shared=shared, clock=self.settings.pacing.clock)
            state = self._state
            if state is not None and state.ledger:
                scorer.limiter.restore(grants.to_restore(state.ledger))
        if grants is None and hook is None:
            return

        def sent(now: float) -> None:
            if grants is not None:
                grants.record(now)
            if hook is not None:
                hook(now)

        stack.callback(scorer.limiter.watch(sent))

    # -- run -------------------------------------------------------------------------
    async def _score(self) -> None:
        scorer, source, buffer = self.scorer, self.source, self._buffer
        assert scorer is not None and source is not None
        hooks = self.settings.hooks
        if hooks.on_start is not None:
            hooks.on_start(source, scorer)
        async with scorer:
            rows = scorer.score(_read(source), resume=self._state, on_answer=self._on_answer())
            self._call = rows
            stats = rows.stats
            done = 0
            async for row in rows:
                buffer.add(row)
                if buffer.pending >= ROWS_PER_SEAL:
                    await on_thread(buffer.seal())
                if len(buffer) >= ROWS_PER_SEGMENT:
                    await self._flush()
                if hooks.progress is not None:
                    finished = rows.rows_emitted + stats.duplicate_rows + stats.rows_resumed
                    hooks.progress(finished - done)
                    done = finished
        await self._flush()

    def _on_answer(self) -> OnAnswer | None:
        """The journal first (an answer counts once it is written), then the caller."""
        if self._commits is not None:
            return self._commits.record_answers
        return self.settings.hooks.on_answer

    async def _flush(self) -> None:
        if not len(self._buffer):
            return
        # Building the rows' arrays and writing them take tens of ms per segment: on a
        # worker thread, not the event loop (lwbatch/durability/commits.py).
        table, invalid = await on_thread(self._buffer.detach())
        if self._commits is not None:
            await self._commits.commit_rows(table, invalid, self._call.open_answers())
        else:
            assert self._sink is not None
            await on_thread(partial(self._sink.write, table))

    # -- finish or fail --------------------------------------------------------------
    def _finish(self) -> RunReport:
        scorer, source, journal, sink = self.scorer, self.source, self.journal, self._sink
        assert scorer is not None and source is not None and sink is not None
        call: Pipeline = self._call
        stats = call.stats
        if scorer.stopped:
            raise Interrupted(saved_in=Path(journal.location) if journal is not None else None)
        if stats.invalid_rows and not stats.distinct_revisions:
            if journal is not None:
                journal.remove()
            raise InputError(
                f"no row can be sent ({stats.invalid_rows:,} rows; first: {stats.first_invalid}); "
                "check `id_column`, the wiki column and the file",
                path=source.name,
            )
        # Accounting: every distinct key and every invalid row ends in exactly one row.
        expected = stats.distinct_revisions + stats.invalid_rows
        if journal is not None:
            journal.fold_into(sink)
        written = sink.rows_written
        if written != expected:
            raise IncompleteRunError(written=written, expected=expected)
        sink.commit(journal.metadata() if journal is not None else {})
        if journal is not None:
            journal.remove()
        stats.rows_written = written
        if stats.invalid_rows:
            one = stats.invalid_rows == 1
            log.warning(
                "%s of %s cannot be sent (first: %s); %s in the output with error invalid_input",
                f"{stats.invalid_rows:,} row" + "s" * (not one),
                source.name,
                stats.first_invalid,
                "it is" if one else "they are",
            )
        return scorer.report(output=sink.name, call=call).with_output(sink.tally)

    def _fail(self, exc: BaseException) -> None:
        """Leave the output as it was, and keep what a rerun can use."""
        journal = self.journal if self._opened else None
        try:
            if self._sink is not None:
                self._sink.abort()
        finally:
            if journal is not None:
                if isinstance(exc, Interrupted | IncompleteRunError) or journal.holds_work():
                    # Keep what came out (journal segments) and every answer.
                    journal.suspend()
                else:
                    # A run that failed before any answer (bad input mid-file, 401 at once,
                    # every model undeployed) leaves nothing to resume, and nothing to
                    # refuse a fix with. Decided while the lock is held: remove() releases
                    # it only once retired.
                    journal.remove()
        if isinstance(exc, IncompleteRunError) and exc.saved_in is None and journal is not None:
            raise IncompleteRunError(
                written=exc.written, expected=exc.expected, saved_in=Path(journal.location)
            ) from None


def _paths_of(source: Source) -> list[str]:
    if isinstance(source, ManySource):
        return [str(s.path) for s in source.sources]
    return [str(source.path)] if isinstance(source, FileSource) else [source.name]


def _unreadable(output: Path) -> None:
    """A finished output this format cannot read back: a rerun would pay again."""
    if output.exists():
        raise RestartNeeded(
            f"{output} already exists, and a finished output in this format cannot be read "
            "back to resume from; pass `restart=True` to score again, or choose another output"
        )


async def _read(source: Source) -> AsyncIterator[list[Revision | InvalidRow]]:
    # Parsing a batch is CPU work in pyarrow; a thread keeps the event loop serving.
    batches = source.batches()
    try:
        while (batch := await anyio.to_thread.run_sync(next, batches, None)) is not None:
            yield batch
    finally:
        # A generator's file stays open until closed; a stopped run should not wait for GC.
        close = getattr(batches, "close", None)
        if close is not None:
            close()


__all__ = ["ROWS_PER_SEAL", "ROWS_PER_SEGMENT", "Job"]
