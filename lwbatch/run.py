"""Source in, sink out: the run the CLI, the demo and `score_file` share.

    Source ──> Scorer ──> RowBuffer ──> Journal segments ──(fold at the end)──> Sink
                                   └──> Sink directly, without a journal

With a journal (the default) the run is resumable and a crash loses no answer: see
lwbatch/durability/journal.py. Either way the sink commits atomically, and only when
every distinct key and every invalid row has exactly one row.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial, wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread
import httpx
import pyarrow as pa

from lwbatch.cache import SqliteScoreCache
from lwbatch.config import DEFAULT_TIMEOUT, Budget, Endpoint, RetryPolicy, Tier, Token
from lwbatch.durability.journal import FileJournal
from lwbatch.durability.lock import OutputLock
from lwbatch.engine.scorer import DEFAULT_LINGER, Scorer
from lwbatch.engine.stats import RunReport
from lwbatch.engine.targets import warn_if_models_disagree
from lwbatch.errors import (
    IncompleteRunError,
    InputError,
    Interrupted,
    RestartNeeded,
    UsageError,
)
from lwbatch.io.inputs import ManySource, open_inputs
from lwbatch.io.rows import RowBuffer
from lwbatch.io.sinks import for_rows, open_sink
from lwbatch.io.sources import DEFAULT_BATCH_ROWS, FileSource
from lwbatch.oauth import Credentials
from lwbatch.pacing.shared import SharedLedger, identity
from lwbatch.plan import Plan, Planner
from lwbatch.protocol.catalog import Catalog, ModelSpec, default_catalog
from lwbatch.results import InvalidRow, Revision
from lwbatch.seams import Journal, Limiter, ReadableSink, ScoreCache, Sink, Source
from lwbatch.tokens import choose_budget
from lwbatch.wikis import wikipedia

log = logging.getLogger("lwbatch")
# Rows per journal segment (or per Parquet row group without a journal).
ROWS_PER_SEGMENT = 16_384
Progress = Callable[[int], None]
P = ParamSpec("P")
R = TypeVar("R")
OnStart = Callable[[Source, Scorer], None]


async def score_file_async(
    input: Path | str | Sequence[Path | str] | Source,
    output: Path | str | Sink,
    *,
    models: Sequence[str],
    id_column: str = "rev_id",
    lang: str = "en",
    wiki_column: str | None = None,
    journal: bool | Journal = True,
    restart: bool = False,
    retry_failed: bool = True,
    endpoint: Endpoint | None = None,
    token: Token | None = None,
    contact: str | None = None,
    tier: Tier | None = None,
    budget: Budget | None = None,
    concurrency: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (per request, not for the call)
    retry: RetryPolicy | None = None,
    verify: bool = True,
    limiter: Limiter | None = None,
    gc_control: bool = False,
    linger: float = DEFAULT_LINGER,
    max_open: int | None = None,
    catalog: Catalog | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Progress | None = None,
    on_start: OnStart | None = None,
    on_send: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    cache: ScoreCache | Path | str | None = None,
    credentials: Credentials | None = None,
    format: str | None = None,
    keep_columns: Sequence[str] | str | None = None,
    share_budget: bool = True,
    state_dir: Path | str | None = None,
) -> RunReport:
    """Score every rev_id of `input` with `models` into `output`; the run's report.

    `input` is a Parquet, CSV or JSON-lines path, a directory of Parquet files, a glob,
    a list of these (read as one input), or any :class:`~lwbatch.seams.Source`; `output`
    a path (or any :class:`~lwbatch.seams.Sink`) written in `format`: ``parquet`` (one
    row per key, a struct per model), ``long`` (Parquet, one row per key and model, with
    each answer's latency and attempts), ``jsonl`` (ORES' score_revisions lines) or
    ``ores-json`` (ORES v3 documents); by default the path's suffix chooses.
    `keep_columns` (names, or ``"all"``) carries input columns to the output, with the
    first row's values where a key repeats. Rows are keyed by
    (wiki, rev_id) when the input names each row's wiki: a ``lang`` column of language
    codes, or `wiki_column`, a column of database names (``enwiki``); otherwise every
    row is of the Wikipedia of `lang`. The output appears only
    when the run completes; on any error it is left as it was. With `journal`, progress
    is kept beside the output, so running the same call again resumes an interrupted
    run; `restart` discards it (and replaces a finished output); `retry_failed` asks
    again, on resume, what failed transiently. `gc_control` lets lwbatch time Python's
    garbage collections (fewer 429s on tight budgets) but switches automatic collection
    off in this process while the run lasts. `cache` (a
    :class:`~lwbatch.seams.ScoreCache`, or the path of an SQLite cache file, created if
    missing) answers what earlier runs already got, and keeps this run's final answers.
    `credentials` (:class:`~lwbatch.oauth.Credentials`) get a token when there is none
    (before the run starts, so that its claims choose the budget)
    and a new one when the gateway answers 401. The engine's arguments are those of
    :class:`~lwbatch.Scorer`.

    `share_budget`: every run of one identity (client or token; anonymous: base URL)
    on this machine draws from one budget, kept in a file under `state_dir` (default:
    ``$LWBATCH_STATE_DIR``, else ``$XDG_CACHE_HOME/lwbatch``, else ``~/.cache/lwbatch``),
    so that runs side by side never send more than the gateway allows one identity.
    ``False`` keeps this run's budget to itself: risky, since the gateway counts both.
    An unlimited budget, a `limiter` of the caller's or an injected `clock` shares
    nothing.

    `on_start(source, scorer)` is called once the input, output and journal are
    accepted and before any request leaves: an async caller may keep the scorer and
    ``await scorer.stop(grace)`` from another task (the CLI does on SIGINT/SIGTERM);
    the run then raises :class:`~lwbatch.Interrupted` with its progress saved.
    """
    catalog = catalog or default_catalog()
    specs = catalog.resolve_all(models)
    # `en`, ` en` and `enwiki` are one run's `lang`: the manifest keeps the code.
    lang = wikipedia(lang).lang
    source = open_for(
        input,
        specs,
        id_column=id_column,
        lang=lang,
        wiki_column=wiki_column,
        batch_rows=batch_rows,
        keep_columns=keep_columns,
    )
    layout = source.key_layout
    kept: list[pa.Field] = list(getattr(source, "kept_fields", ()))
    if isinstance(cache, str | Path):
        _check_cache_path(Path(cache), [*_paths_of(source), str(output)])
    owned = SqliteScoreCache(cache) if isinstance(cache, str | Path) else None
    shared: SharedLedger | None = None
    try:
        sink = (
            output
            if isinstance(output, Sink)
            else open_sink(output, input=_paths_of(source), format=format, specs=specs, lang=lang)
        )
        buffer = RowBuffer(specs, layout, kept, detail=True)
        readable = sink.read_back if isinstance(sink, ReadableSink) else None
        sink = for_rows(sink)
        sink.open(buffer.schema)
        store: Journal | None
        if isinstance(journal, Journal):
            store = journal
        elif not journal:
            store = None
        elif isinstance(output, Sink):
            raise UsageError(
                "`journal=True` keeps progress beside an output path; for a Sink object pass "
                "a Journal (e.g. FileJournal) as `journal`, or `journal=False`"
            )
        else:
            store = FileJournal(
                Path(output),
                models=[s.name for s in specs],
                layout=layout,
                manifest={
                    "input": source.fingerprint(),
                    "id_column": id_column,
                    "lang": lang,
                    "wiki_column": layout.wiki_column,
                    # None, not [], without kept columns: journals from before agree.
                    "keep_columns": [f.name for f in kept] or None,
                },
            )

        def sent(now: float) -> None:
            if store is not None:
                # Negative: a grant the shared budget's file holds (see _to_restore).
                store.record_grant(-time.time() if shared is not None else time.time())
            if on_send is not None:
                on_send(now)

        if credentials is not None and token is None:
            token = await credentials.fetch_async(verify=verify)
        if share_budget and limiter is None and clock is time.monotonic:
            oauth = credentials is not None
            chosen = choose_budget(budget=budget, tier=tier, token=token, oauth=oauth)
            if not chosen.budget.is_unlimited:
                who = identity(
                    endpoint or Endpoint.external(),
                    token,
                    credentials.client_id if credentials is not None else None,
                )
                shared = await SharedLedger.open_async(chosen.budget, who, state_dir=state_dir)
        scorer = Scorer(
            [s.name for s in specs],
            catalog=catalog,
            endpoint=endpoint,
            token=token,
            contact=contact,
            tier=tier,
            budget=budget,
            concurrency=concurrency,
            timeout=timeout,
            retry=retry,
            verify=verify,
            limiter=limiter,
            lang=lang,
            linger=linger,
            max_open=max_open,
            transport=transport,
            clock=clock,
            sleep=sleep,
            gc_control=gc_control,
            on_send=sent,
            on_answer=store.record_answers if store is not None else None,
            cache=owned if owned is not None else cache if isinstance(cache, ScoreCache) else None,
            credentials=credentials,
            ledger=shared,
        )
        state = None
        if store is not None:
            try:
                state = store.open(
                    restart=restart,
                    retry_failed=retry_failed,
                    ledger_keep=max((w.requests for w in scorer.budget.windows), default=0),
                    previous=readable
                    if readable is not None
                    else None
                    if isinstance(output, Sink)
                    else partial(_unreadable, Path(output)),
                )
            except RestartNeeded as exc:
                if scorer.cache is None:
                    raise
                # A grown input or another model list: restarting costs only what the
                # cache does not hold.
                raise UsageError(
                    f"{exc}; with `restart=True` the answers `cache` holds are not asked again"
                ) from None
            if state.ledger:
                state.ledger = _to_restore(state.ledger, store, shared=shared is not None)
            if state.resumed:
                log.info(
                    "resuming: %s rows done earlier, %s revisions with some answers%s",
                    f"{state.rows_done:,}",
                    f"{len(state.partial):,}",
                    f", {state.retried:,} failures of the service to ask again"
                    if state.retried
                    else "",
                )

        def flush() -> None:
            if not len(buffer):
                return
            table, invalid = buffer.take()
            if store is not None:
                store.commit_rows(table, invalid, scorer.open_answers())
            else:
                sink.write(table)

        # Without a journal the output still gets its lock: a journaled run on the same
        # output would otherwise sweep this run's temporary file as stale.
        unjournaled = (
            OutputLock(Path(output)) if store is None and not isinstance(output, Sink) else None
        )
        if unjournaled is not None:
            unjournaled.acquire()
        stats = scorer.stats
        try:
            if on_start is not None:
                on_start(source, scorer)
            async with scorer:
                done = 0
                async for row in scorer.score(_read(source), resume=state):
                    buffer.add(row)
                    if len(buffer) >= ROWS_PER_SEGMENT:
                        flush()
                    if progress is not None:
                        finished = scorer.rows_emitted + stats.duplicate_rows + stats.rows_resumed
                        progress(finished - done)
                        done = finished
            flush()
            if scorer.stopped:
                raise Interrupted(saved_in=Path(store.location) if store is not None else None)
            if stats.invalid_rows and not stats.distinct_revisions:
                if store is not None:
                    store.remove()
                raise InputError(
                    f"no row can be sent ({stats.invalid_rows:,} rows; "
                    f"first: {stats.first_invalid}); "
                    "check `id_column`, the wiki column and the file",
                    path=source.name,
                )
            # Accounting: every distinct key and every invalid row ends in exactly one row.
            expected = stats.distinct_revisions + stats.invalid_rows
            if store is not None:
                store.fold_into(sink)
            written = sink.rows_written
            if written != expected:
                raise IncompleteRunError(written=written, expected=expected)
            sink.commit(store.metadata() if store is not None else {})
        except (Interrupted, IncompleteRunError) as exc:
            # Keep what came out (journal segments) and every answer: a rerun completes it.
            try:
                sink.abort()
            finally:
                if store is not None:
                    store.suspend()
            if isinstance(exc, IncompleteRunError):
                raise IncompleteRunError(
                    written=exc.written,
                    expected=exc.expected,
                    saved_in=Path(store.location) if store is not None else None,
                ) from None
            raise
        except BaseException:
            try:
                sink.abort()
            finally:
                # A run that failed before any answer (bad input mid-file, 401 at once, every
                # model undeployed) leaves nothing to resume, and nothing to refuse a fix with.
                # Decided while the lock is held: remove() releases it only once retired.
                if store is not None:
                    if store.holds_work():
                        store.suspend()
                    else:
                        store.remove()
            raise
        finally:
            if unjournaled is not None:
                unjournaled.release()
        if store is not None:
            store.remove()
        stats.rows_written = written
        report = scorer.report(output=sink.name)
        if stats.invalid_rows:
            log.warning(
                "%s of %s cannot be sent (first: %s); they are in the output with error "
                "invalid_input",
                f"{stats.invalid_rows:,} row" + "s" * (stats.invalid_rows != 1),
                source.name,
                stats.first_invalid,
            )
        return report
    finally:
        if shared is not None:
            await shared.aclose()
        if owned is not None:
            owned.close()


def _to_restore(ledger: list[float], store: Journal, *, shared: bool) -> list[float]:
    """The grants of earlier runs of this output (wall-clock times) to count again.

    The journal keeps a grant as its time, or as minus its time when the shared
    budget's file holds it. Sharing, only the others count again (a run that kept
    its budget to itself, or one before the file was replaced); they are then
    recorded as held, so that a later resume does not add them twice. Not sharing,
    all of them count.
    """
    held = Counter(-t for t in ledger if t < 0)
    lacking = []
    for t in ledger:
        if t > 0:
            if held[t]:
                held[t] -= 1
            else:
                lacking.append(t)
    if shared:
        for t in lacking:
            store.record_grant(-t)
        return lacking
    return sorted([*(t for t in ledger if t > 0), *held.elements()])


def open_for(
    input: Path | str | Sequence[Path | str] | Source,
    specs: Sequence[ModelSpec],
    *,
    id_column: str,
    lang: str,
    wiki_column: str | None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    keep_columns: Sequence[str] | str | None = None,
) -> Source:
    """The source of `input`, checked against the models it is for (as `score` and
    `plan` both need it)."""
    if isinstance(input, Source) and keep_columns is not None:
        raise UsageError(
            "`keep_columns` is for inputs given as paths: a Source object chooses its own "
            "kept columns (FileSource's `keep_columns`)"
        )
    source = (
        input
        if isinstance(input, Source)
        else open_inputs(
            [input] if isinstance(input, Path | str) else input,
            id_column=id_column,
            lang=lang,
            wiki_column=wiki_column,
            batch_rows=batch_rows,
            keep_columns=keep_columns,
        )
    )
    taken = {"rev_id", source.key_layout.wiki_column, *(s.name for s in specs)}
    for field in getattr(source, "kept_fields", ()):
        if field.name in taken:
            raise UsageError(
                f"`keep_columns` {field.name!r}: the output has a column of that name "
                "already (a key or a model); rename it in the input"
            )
    if isinstance(source, FileSource | ManySource) and not source.page_columns:
        for spec in specs:
            if spec.needs_page:
                raise InputError(
                    f"{spec.name} needs a page_id or page_title column beside the rev_id "
                    "(its server takes the page with the revision)",
                    path=source.name,
                )
    if source.key_layout.wiki_column is None:
        warn_if_models_disagree(specs, lang, source.name)
    return source


def plan_file(
    input: Path | str | Sequence[Path | str] | Source,
    *,
    models: Sequence[str],
    id_column: str = "rev_id",
    lang: str = "en",
    wiki_column: str | None = None,
    budget: Budget | None = None,
    tier: Tier | None = None,
    token: Token | None = None,
    credentials: Credentials | None = None,
    catalog: Catalog | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    cache: ScoreCache | Path | str | None = None,
) -> Plan:
    """The :class:`Plan` for scoring `input` with `models`; sends no request.

    Arguments as for :func:`lwbatch.score_file`; the budget is chosen as `score`
    chooses it (`budget`, else `tier`, else the token's claims; without a token,
    `credentials` get one from the token endpoint, the only request `plan` sends, and
    its claims count). With `cache`, answers
    it already has are counted apart (a cache file that does not exist has none).
    """
    specs = (catalog or default_catalog()).resolve_all(models)
    lang = wikipedia(lang).lang
    source = open_for(
        input, specs, id_column=id_column, lang=lang, wiki_column=wiki_column, batch_rows=batch_rows
    )
    if credentials is not None and token is None and budget is None and tier is None:
        token = credentials.fetch()
    owned = (
        SqliteScoreCache(cache, read_only=True)
        if isinstance(cache, str | Path) and Path(cache).exists()
        else None
    )
    kept = owned if owned is not None else cache if isinstance(cache, ScoreCache) else None
    try:
        planner = Planner(
            specs,
            lang,
            choose_budget(budget=budget, tier=tier, token=token),
            cache=kept,
        )
        for items in source.batches():
            planner.add(items)
        return planner.finish()
    finally:
        if owned is not None:
            owned.close()


def _check_cache_path(cache: Path, files: Sequence[str]) -> None:
    """A cache file that is also the input or the output would destroy one of them."""
    for named in files:
        if cache.resolve() == Path(named).resolve():
            raise UsageError(
                f"`cache` {cache} is also the input or the output; give the cache a file of its own"
            )


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


def _blocking(run: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    @wraps(run)  # help() and inspect.signature() show run's arguments
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return anyio.run(partial(run, *args, **kwargs))

    return call


score_file = _blocking(score_file_async)
score_file.__name__ = score_file.__qualname__ = "score_file"
score_file.__doc__ = (
    (score_file_async.__doc__ or "")
    + """
    This is the blocking form of :func:`score_file_async`, with the same arguments:

    >>> report = score_file("revisions.parquet", "scores.parquet", models=["enwiki-damaging"])
    """
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


__all__ = ["ROWS_PER_SEGMENT", "plan_file", "score_file", "score_file_async"]
