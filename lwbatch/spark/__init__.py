"""Scoring a Spark DataFrame inside Spark, under one budget for the whole job.

    df ──repartition by the row key──> mapInArrow: in each task, the same Scorer as the
    CLI (catalogue, budget share, retries, batching, errors) ──> the merged-row layout

The job-wide budget is divided among the task slots that can run at once (not among
partitions: a slot runs its partitions one after another), so the cluster as a whole
stays inside every window of it. Each task builds its own HTTP client and event loop:
neither can travel to an executor.

With a progress area (`progress`), each task commits its answers there as they come:
a rerun of the job, a task Spark retries and a second action on the returned DataFrame
ask only what is unanswered. Without one, each evaluation scores again.
`spark.speculation=true` is refused.

`import lwbatch` never imports this module, nor pyspark.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql.pandas.types import from_arrow_schema

from lwbatch.cache import SqliteScoreCache
from lwbatch.compat import accepts_old_keywords
from lwbatch.config import Budget, Tier
from lwbatch.durability.progress import ProgressArea
from lwbatch.engine.targets import warn_if_models_disagree
from lwbatch.errors import LWBatchError, UsageError
from lwbatch.identity import Identity
from lwbatch.io.columns import Columns
from lwbatch.io.rows import output_schema
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.settings import Connection, Pacing, read_rate, read_tier
from lwbatch.spark import preflight
from lwbatch.spark.cached import cache_answers, fold_into
from lwbatch.spark.counters import Counters, counters
from lwbatch.spark.task import CACHED_COLUMN, ORIGIN_COLUMNS, PARTITION_COLUMN, PartitionTask
from lwbatch.wikis import Wiki, wikipedia, wikis

log = logging.getLogger("lwbatch")


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a job's tasks commit their answers (`path`: a directory, a local path or a
    URI such as ``hdfs://...``), every `commit_every` seconds; `restart` discards what
    an earlier run of the job left there. `cache`: a score cache file on the driver's
    machine, read by the tasks through the progress area."""

    path: str | Path
    restart: bool = False
    commit_every: float = 5.0
    # A score cache (SQLite file): its answers cost no request, and the job's fresh
    # answers are added to it by :func:`finish`.
    cache: str | Path | None = None

    def __post_init__(self) -> None:
        if not self.commit_every > 0:
            raise UsageError(f"`commit_every` must be > 0 seconds, got {self.commit_every}")

    def area(self) -> ProgressArea:
        return ProgressArea.at(self.path)


@accepts_old_keywords("connection", "pacing")
def score(
    df: DataFrame,
    *,
    models: Sequence[str],
    rate: str | Budget | None = None,
    tier: Tier | str | None = None,
    id_column: str = "rev_id",
    wiki_column: str | None = None,
    lang: str = "en",
    slots: int | None = None,
    connection: Connection | None = None,
    pacing: Pacing | None = None,
    progress: str | Path | Progress | None = None,
    counters: Counters | None = None,
) -> DataFrame:
    """`df` scored with `models`: the key columns, then one struct column per model,
    exactly the Parquet layout of `lwbatch score`.

    The budget is `rate` (N/PERIOD, or a :class:`~lwbatch.Budget`) or the `tier`'s
    (default: what the token says, as for the command; anonymous without one) for the
    whole job. The rows are repartitioned by their key into `slots` partitions (default:
    the context's default parallelism, the task slots that run at once), each with its
    share of the budget: the shares add up to the budget however the tasks are
    scheduled, and each key is requested once. Rows are keyed by (wiki, rev_id) as for a
    file: `wiki_column` (database names), else a ``wiki_db`` or ``lang`` column; else by
    rev_id. `connection` as for :func:`lwbatch.score_file`; of `pacing`, the
    concurrency and retries (a Spark job splits its budget between its slots and shares
    it with no other run).

    Before returning, the driver asks each model about one row of each wiki of `df`
    (a 401 or a model deployed nowhere fails here, not in every task); those answers
    are kept. `progress` (a directory, or :class:`Progress`): where the tasks commit
    their answers as they come, so that running the job again, a retried task or a
    second action on the result pays only for what is unanswered; remove it
    (:func:`finish`) once the result is written. Without it, write or persist
    the result once: each evaluation scores again. `counters` (:func:`counters`) add
    up what the tasks did, once an action ran.
    """
    connection, pacing = connection or Connection(), pacing or Pacing(share=False)
    spark = df.sparkSession
    _check(spark, pacing, slots)
    _check_interpreter(spark)
    models = [models] if isinstance(models, str) else list(models)
    specs, columns = _decide(df, models, connection, id_column, wiki_column)
    identity = _identity(connection, read_rate(rate), read_tier(tier))
    default = wikipedia(lang)  # a bad `lang` fails here, not in every task
    if columns.wiki is None:
        warn_if_models_disagree(specs, lang, "the DataFrame")
    keys = _partition_keys(df, columns, default)
    kept = progress if isinstance(progress, Progress) or progress is None else Progress(progress)
    task = _task(
        df,
        identity,
        columns,
        keys,
        slots or spark.sparkContext.defaultParallelism,
        kept,
        _Job(
            tuple(models),
            lang,
            replace(connection, transport=None, token=identity.token),
            replace(pacing, share=False),
            counters,
        ),
    )
    prepared = _prepare(df, task, columns, keys, default)
    return prepared.mapInArrow(task, from_arrow_schema(output_schema(specs, columns.layout)))


def _prepare(
    df: DataFrame, task: PartitionTask, columns: Columns, keys: list[Column], default: Wiki
) -> DataFrame:
    """The rows the tasks read: the columns they need, the cache's answers, each row's
    file and row where Spark knows them, repartitioned by key."""
    from pyspark.sql import functions as F

    named = [f"__lwbatch_key{i}" for i in range(len(keys))]
    origin = _origin_columns() if task.located else []
    prepared = df.select(
        *columns.read(), *origin, *(k.alias(n) for k, n in zip(keys, named, strict=True))
    )
    if task.cached:
        assert task.progress is not None
        prepared = _with_cached(prepared, f"{task.progress.uri}/cached.parquet", named, default)
    # Exactly one partition per share: a slot that runs two of them one after the
    # other would start the second with a fresh share and go over its own. Each row
    # carries its partition (Spark's own hash partitioning: pmod of the Murmur3 hash).
    prepared = prepared.repartition(task.slots, *named)
    index = F.pmod(F.hash(*(F.col(n) for n in named)), F.lit(task.slots))
    return prepared.withColumn(PARTITION_COLUMN, index).drop(*named)


def _origin_columns() -> list[Column]:
    """Each row's file and row number in it (Spark's _metadata of a file source)."""
    from pyspark.sql import functions as F

    return [
        F.col("_metadata.file_path").alias(ORIGIN_COLUMNS[0]),
        F.col("_metadata.row_index").alias(ORIGIN_COLUMNS[1]),
    ]


def _knows_origin(df: DataFrame) -> bool:
    """Whether Spark knows each row's file and row (a source of files)."""
    from pyspark.errors import PySparkException

    if not df.inputFiles():
        return False  # built in memory, or a source of no files
    try:
        df.select(*_origin_columns())  # analysed at once: a source without them fails here
    except PySparkException:
        return False
    return True


def _with_cached(prepared: DataFrame, uri: str, named: list[str], default: Wiki) -> DataFrame:
    """`prepared` with each row's answers from the score cache (journal lines)."""
    from pyspark.sql import functions as F

    cached = prepared.sparkSession.read.parquet(uri)
    if len(named) == 1:  # the input names no wiki: every row is `lang`'s
        cached = cached.where(F.col("wiki") == F.lit(default.dbname))
        on = [F.col("rev_id").cast("double").alias(named[0])]
    else:
        on = [F.col("wiki").alias(named[0]), F.col("rev_id").cast("double").alias(named[1])]
    by_key = cached.groupBy(*on).agg(F.collect_list("answer").alias(CACHED_COLUMN))
    return prepared.join(by_key, on=named, how="left")


@dataclass(frozen=True, slots=True)
class _Job:
    models: tuple[str, ...]
    lang: str
    connection: Connection
    pacing: Pacing
    counters: Counters | None


def _task(
    df: DataFrame,
    identity: Identity,
    columns: Columns,
    keys: list[Column],
    slots: int,
    progress: Progress | None,
    job: _Job,
) -> PartitionTask:
    """What each task runs, once the pre-flight has passed: its share of the budget,
    the progress area and the answers the driver has already."""
    budget = identity.budget
    if not budget.is_unlimited:
        budget.share(slots)  # refuses a window smaller than the slots, before any request
    area = progress.area() if progress is not None else None
    if progress is not None and area is not None:  # refused before any request
        area.check(_layout(df, columns, job.lang), restart=progress.restart)
    specs = job.connection.models().resolve_all(list(job.models))
    rows, targets = preflight.revisions(
        preflight.sample(df, columns, keys), columns, wikipedia(job.lang), specs
    )
    # A rerun's pre-flight asks only what the earlier one did not answer.
    earlier = area.read_known() if progress and area and not progress.restart else []
    cache = _open_cache(progress)
    try:
        # Before anything is kept: a job that cannot succeed leaves nothing behind.
        checked = preflight.check(
            rows,
            job.models,
            budget=budget,
            lang=job.lang,
            connection=job.connection,
            pacing=job.pacing,
            cache=cache,
            known=earlier,
        )
        if job.counters is not None:
            job.counters.add_requests(checked.stats)
        cached = False
        if progress is not None and area is not None:
            layout = _layout(df, columns, job.lang)
            slots = _start_area(area, progress, layout, slots, checked.answers)
            if cache is not None:
                cached = area.write_cached(cache_answers(cache, targets)) is not None
    finally:
        if cache is not None:
            cache.close()
    if not budget.is_unlimited:
        budget.share(slots)  # the area's partitions, which may differ
    log.info(
        "spark: budget %s for the job over %d task slots, per task %s "
        "(set `slots` to the executors x cores that run at once)",
        budget.describe(),
        slots,
        _describe_shares(budget, slots),
    )
    return PartitionTask(
        models=job.models,
        budget=budget,
        slots=slots,
        connection=job.connection,
        pacing=job.pacing,
        columns=columns,
        lang=job.lang,
        counters=job.counters,
        progress=area,
        run=uuid.uuid4().hex[:12],
        commit_every=progress.commit_every if progress is not None else 5.0,
        known=checked.answers,
        sent_before=checked.sent,
        cached=cached,
        located=_knows_origin(df),
    )


def _start_area(
    area: ProgressArea,
    progress: Progress,
    layout: str,
    slots: int,
    known: tuple[bytes, ...],
) -> int:
    """The area made ready for the tasks, once the pre-flight passed: the partitions
    they use (a rerun keeps the area's)."""
    asked, slots = slots, area.prepare(layout, slots, restart=progress.restart)
    if slots != asked:
        log.info("the progress area keeps the %d partitions it started with, not %d", slots, asked)
    area.write_known(known)
    return slots


def _layout(df: DataFrame, columns: Columns, lang: str) -> str:
    """What decides which partition a key lands in; a progress area keeps to one."""
    ident = df.schema[columns.id_column].dataType.simpleString()
    wiki = f"{columns.wiki} ({columns.wiki_form})" if columns.wiki is not None else "none"
    return f"rev_id {columns.id_column} ({ident}, hashed as double), wiki {wiki}, lang {lang}"


def finish(progress: str | Path | Progress) -> None:
    """Once the result is written: add the job's fresh answers to the progress's score
    cache (if it has one), then remove the progress area."""
    kept = progress if isinstance(progress, Progress) else Progress(progress)
    area = kept.area()
    cache = _open_cache(kept)
    if cache is not None:
        try:
            if area.exists():
                fold_into(cache, area)
        except LWBatchError as exc:
            # The result is written: only a later run pays for these answers again.
            log.warning("%s; the job's answers are not kept in the cache", exc)
        finally:
            cache.close()
    area.remove()


def _open_cache(progress: Progress | None) -> SqliteScoreCache | None:
    if progress is None or progress.cache is None:
        return None
    return SqliteScoreCache(progress.cache)


def _decide(
    df: DataFrame,
    models: list[str],
    connection: Connection,
    id_column: str,
    wiki_column: str | None,
) -> tuple[list[ModelSpec], Columns]:
    """The models' specs and the key columns, checked before anything is sent."""
    specs = connection.models().resolve_all(models)
    columns = Columns.decide(
        df.columns,
        id_column=id_column,
        wiki_column=wiki_column,
        keep_columns=None,
        where="the DataFrame",
    )
    if not columns.pages and any(s.needs_page for s in specs):
        needing = next(s.name for s in specs if s.needs_page)
        raise UsageError(
            f"{needing} needs a page_id or page_title column beside the rev_id (its "
            "server takes the page with the revision)"
        )
    return specs, columns


def _identity(connection: Connection, budget: Budget | None, tier: Tier | None) -> Identity:
    # One token for the job, fetched here only when its claims choose the budget; the
    # tasks start with it (and renew it from the credentials on a 401).
    choosing = budget is None and tier is None
    return Identity.resolve_sync(
        connection, Pacing(share=False), budget=budget, tier=tier, fetch=choosing
    )


def _check_interpreter(spark: Any) -> None:
    """On a local master, the executors' Python must import lwbatch and pyarrow: told
    here, before any request, rather than by every task."""
    context = spark.sparkContext
    python = getattr(context, "pythonExec", None)
    if not str(context.master).startswith("local") or not python or python == sys.executable:
        return
    try:
        found = (
            subprocess.run(
                [python, "-c", "import lwbatch, pyarrow"], capture_output=True, timeout=120
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        found = False
    if not found:
        raise UsageError(
            f"the executors' Python ({python}) cannot import lwbatch and pyarrow: set "
            f"PYSPARK_PYTHON={sys.executable} before the SparkSession starts (or install "
            "lwbatch there)"
        )


def _check(spark: Any, pacing: Pacing, slots: int | None) -> None:
    if pacing.limiter is not None or pacing.state_dir is not None:
        raise UsageError(
            "`limiter` and `state_dir` are for the local engine: a Spark job splits its "
            "budget between its task slots"
        )
    if slots is not None and slots < 1:
        raise UsageError(f"`slots` must be >= 1, got {slots}")
    # A core setting: fixed when the context starts, read from the context's conf.
    if str(spark.sparkContext.getConf().get("spark.speculation", "false")).lower() == "true":
        raise UsageError(
            "spark.speculation is true: a speculative copy of a task scores its partition "
            "again, paying every request twice; set spark.speculation=false for this job"
        )


def _describe_shares(budget: Budget, slots: int) -> str:
    if budget.is_unlimited:
        return "unlimited"
    first, last = budget.share(slots, 0), budget.share(slots, slots - 1)
    if first == last:
        return first.describe()
    return f"{first.describe()} or {last.describe()}"


def _partition_keys(df: DataFrame, columns: Columns, default: Wiki) -> list[Column]:
    """Columns equal for every spelling of one key (" 2", "002" and "2.0" are rev_id 2;
    an empty language cell is `lang`'s Wikipedia; "de" and "dewiki" are one wiki), so
    rows of one key meet in one partition. Values that name no key may land anywhere:
    they send nothing."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    ident = df[columns.id_column]
    if isinstance(df.schema[columns.id_column].dataType, StringType):
        ident = _strip(ident)
    # One type whatever the column's (and with or without the cache's join): a key's
    # partition, and so where its progress is kept, depends on the type hashed.
    ident = ident.try_cast("double")
    if columns.wiki is None:
        return [ident]
    wiki = _strip(df[columns.wiki])
    if columns.wiki_form == "lang":
        codes = wikis().by_lang
        to_dbname = F.create_map(*(F.lit(x) for c, w in codes.items() for x in (c, w.dbname)))
        wiki = F.coalesce(F.nullif(wiki, F.lit("")), F.lit(default.dbname))
        wiki = F.coalesce(F.try_element_at(to_dbname, wiki), wiki)
    return [wiki, ident]


def _strip(column: Column) -> Column:
    """`column` without leading and trailing whitespace, as Python's str.strip() sees
    it (Spark's trim() takes ASCII spaces only; (?U) makes \\s Unicode's)."""
    from pyspark.sql import functions as F

    return F.regexp_replace(column, r"(?U)^\s+|\s+$", "")


__all__ = ["Counters", "PartitionTask", "Progress", "counters", "finish", "score"]
