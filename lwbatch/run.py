"""The public functions that score a file or plan its cost: settings values in, one
:class:`~lwbatch.job.Job` (or one planner) out. Every entry point goes through here or
through :class:`~lwbatch.job.Job` itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial, wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import anyio

from lwbatch.cache import SqliteScoreCache
from lwbatch.compat import accepts_old_keywords
from lwbatch.config import Budget, Tier
from lwbatch.engine.stats import RunReport
from lwbatch.errors import InputError
from lwbatch.identity import Identity
from lwbatch.io.inputs import open_for
from lwbatch.job import Input, Job, Output
from lwbatch.plan import Plan, Planner
from lwbatch.seams import ScoreCache
from lwbatch.settings import Connection, Files, Hooks, Pacing, RunSettings
from lwbatch.wikis import wikipedia

P = ParamSpec("P")
R = TypeVar("R")


@accepts_old_keywords("connection", "pacing", "files", "hooks")
async def score_file_async(
    input: Input,
    output: Output,
    *,
    models: Sequence[str],
    rate: str | Budget | None = None,
    tier: Tier | str | None = None,
    id_column: str = "rev_id",
    wiki_column: str | None = None,
    lang: str = "en",
    connection: Connection | None = None,
    pacing: Pacing | None = None,
    files: Files | None = None,
    hooks: Hooks | None = None,
) -> RunReport:
    """Score every rev_id of `input` with `models` into `output`; the run's report.

    `input` is a Parquet, CSV or JSON-lines path, a directory of Parquet files, a glob,
    a list of these (read as one input), or any :class:`~lwbatch.seams.Source`; `output`
    a path (or any :class:`~lwbatch.seams.Sink`) written in ``files.format``: ``parquet``
    (one row per key, a struct per model), ``long`` (one row per key and model),
    ``jsonl`` (ORES' score_revisions lines) or ``ores-json`` (ORES v3 documents); by
    default the path's suffix chooses.

    The budget is `rate` (N/PERIOD such as ``"1000/h"``, ``"unlimited"`` off the public
    gateway, or a :class:`~lwbatch.Budget`) or `tier`'s; by default what the token says
    (anonymous without one). Rows are keyed by (wiki, rev_id) when the input names each
    row's wiki: a ``lang`` column of language codes, or `wiki_column`, a column of
    database names (``enwiki``); otherwise every row is of the Wikipedia of `lang`.
    `id_column` holds the rev_ids.

    `connection` (:class:`~lwbatch.Connection`): where requests go and as whom;
    `pacing` (:class:`~lwbatch.Pacing`): concurrency, retries, the budget shared with
    every run of the same identity on this machine; `files` (:class:`~lwbatch.Files`):
    formats, kept columns, the journal that makes the run resumable, the score cache;
    `hooks` (:class:`~lwbatch.Hooks`): progress, the start of the run, every request.

    The output appears only when the run completes; on any error it is left as it was.
    With the journal (the default), running the same call again resumes an interrupted
    run. A stopped run raises :class:`~lwbatch.Interrupted` with its progress saved.
    """
    settings = RunSettings.of(
        models,
        rate=rate,
        tier=tier,
        id_column=id_column,
        wiki_column=wiki_column,
        lang=lang,
        connection=connection,
        pacing=pacing,
        files=files,
        hooks=hooks,
    )
    return await Job(input, output, settings).run()


def _blocking(run: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    @wraps(run)  # help() and inspect.signature() show run's arguments
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return anyio.run(partial(run, *args, **kwargs))

    return call


score_file = _blocking(score_file_async)
score_file.__name__ = score_file.__qualname__ = "score_file"
# Its own name in the warning about lwbatch 0.1's keywords.
score_file = accepts_old_keywords("connection", "pacing", "files", "hooks")(score_file)
score_file.__doc__ = (
    (score_file_async.__doc__ or "")
    + """
    This is the blocking form of :func:`score_file_async`, with the same arguments:

    >>> report = score_file("revisions.parquet", "scores.parquet", models=["enwiki-damaging"])
    """
)


@accepts_old_keywords("connection", "files")
def plan_file(
    input: Input,
    *,
    models: Sequence[str],
    rate: str | Budget | None = None,
    tier: Tier | str | None = None,
    id_column: str = "rev_id",
    wiki_column: str | None = None,
    lang: str = "en",
    connection: Connection | None = None,
    files: Files | None = None,
) -> Plan:
    """The :class:`Plan` for scoring `input` with `models`; sends no request.

    Arguments as for :func:`lwbatch.score_file`, read the same way (same columns, keys,
    refusals); the budget is chosen as `score` chooses it (`rate`, else `tier`, else the
    token's claims; without a token, ``connection.credentials`` get one from the token
    endpoint, the only request `plan` sends, and its claims count). With ``files.cache``,
    answers it already has are counted apart (a cache file that does not exist has none).
    """
    settings = RunSettings.of(
        models,
        rate=rate,
        tier=tier,
        id_column=id_column,
        wiki_column=wiki_column,
        lang=lang,
        connection=connection,
        files=files,
    )
    specs = settings.connection.models().resolve_all(settings.models)
    lang = wikipedia(settings.lang).lang
    source = open_for(
        input,
        specs,
        id_column=settings.id_column,
        lang=lang,
        wiki_column=settings.wiki_column,
        batch_rows=settings.files.batch_rows,
        input_format=settings.files.input_format,
        keep_columns=settings.files.keep_columns,  # checked as score checks them
    )
    # Plan sends a request only to fetch a token whose claims choose the budget.
    choosing = settings.budget is None and settings.tier is None
    identity = Identity.resolve_sync(
        settings.connection,
        settings.pacing,
        budget=settings.budget,
        tier=settings.tier,
        fetch=choosing,
    )
    cache = settings.files.cache
    owned: SqliteScoreCache | None = None
    kept: ScoreCache | None
    if isinstance(cache, Path):
        owned = SqliteScoreCache(cache, read_only=True) if cache.exists() else None
        kept = owned
    else:
        kept = cache
    try:
        planner = Planner(specs, lang, identity.choice, cache=kept)
        for items in source.batches():
            planner.add(items)
        planned = planner.finish()
    finally:
        if owned is not None:
            owned.close()
    if planned.invalid and not planned.distinct:
        # What score would refuse: no row could be sent.
        raise InputError(
            f"no row can be sent ({planned.invalid:,} rows; first: {planner.first_invalid}); "
            "check `id_column`, the wiki column and the file",
            path=source.name,
        )
    return planned


__all__ = ["plan_file", "score_file", "score_file_async"]
