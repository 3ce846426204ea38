"""Scoring a Spark DataFrame inside Spark, under one budget for the whole job.

    df ──repartition by the row key──> mapInArrow: in each task, the same Scorer as the
    CLI (catalogue, budget share, retries, batching, errors) ──> the merged-row layout

The job-wide budget is divided among the task slots that can run at once (not among
partitions: a slot runs its partitions one after another), so the cluster as a whole
stays inside every window of it. Each task builds its own HTTP client and event loop:
neither can travel to an executor.

Scoring costs requests and is not idempotent: write or persist the returned DataFrame
once. Evaluating it twice (a `count()` then a `write`) scores twice; a retried or
speculative task scores its partition again. `spark.speculation=true` is refused.

`import lwbatch` never imports this module, nor pyspark.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import anyio
import anyio.to_thread
import pyarrow as pa
from pyspark import TaskContext
from pyspark.accumulators import AccumulatorParam
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from lwbatch.compat import accepts_old_keywords
from lwbatch.config import Budget, Tier
from lwbatch.engine.scorer import Scorer
from lwbatch.engine.stats import RunStats
from lwbatch.engine.targets import warn_if_models_disagree
from lwbatch.errors import UsageError, primary_error
from lwbatch.identity import Identity
from lwbatch.io.columns import Columns
from lwbatch.io.row_reader import RowReader
from lwbatch.io.rows import RowBuffer, output_schema
from lwbatch.settings import Connection, Pacing, read_rate, read_tier
from lwbatch.wikis import Wiki, wikipedia, wikis

log = logging.getLogger("lwbatch")
# Output batches a task keeps ready ahead of Spark's reading them.
_AHEAD = 4
_ROWS_PER_BATCH = 8192


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
    it with no other run). Write or persist the result once: each evaluation scores
    again. `counters` (:func:`counters`) add up what the tasks did, once an action ran.
    """
    connection, pacing = connection or Connection(), pacing or Pacing(share=False)
    spark = df.sparkSession
    _check(spark, pacing, slots)
    models = [models] if isinstance(models, str) else list(models)
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
    identity = _identity(connection, read_rate(rate), read_tier(tier))
    budget = identity.budget
    slots = slots or spark.sparkContext.defaultParallelism
    if not budget.is_unlimited:
        budget.share(slots)  # refuses a window smaller than the slots, before any task
    default = wikipedia(lang)  # a bad `lang` fails here, not in every task
    if columns.wiki is None:
        warn_if_models_disagree(specs, lang, "the DataFrame")
    log.info(
        "spark: budget %s for the job over %d task slots, per task %s "
        "(set `slots` to the executors x cores that run at once)",
        budget.describe(),
        slots,
        _describe_shares(budget, slots),
    )
    keys = _partition_keys(df, columns, default)
    # Exactly `slots` partitions, one share each: a slot that runs two of them one
    # after the other would start the second with a fresh share and go over its own.
    prepared = df.select(*columns.read()).repartition(slots, *keys)
    task = PartitionTask(
        models=tuple(models),
        budget=budget,
        slots=slots,
        connection=replace(connection, transport=None, token=identity.token),
        pacing=replace(pacing, share=False),
        columns=columns,
        lang=lang,
        counters=counters,
    )
    return prepared.mapInArrow(task, from_arrow_schema(output_schema(specs, columns.layout)))


def _identity(connection: Connection, budget: Budget | None, tier: Tier | None) -> Identity:
    # One token for the job, fetched here only when its claims choose the budget; the
    # tasks start with it (and renew it from the credentials on a 401).
    choosing = budget is None and tier is None
    return Identity.resolve_sync(
        connection, Pacing(share=False), budget=budget, tier=tier, fetch=choosing
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
        ident = _strip(ident).try_cast("double")
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


@dataclass(frozen=True, slots=True)
class PartitionTask:
    """What each Spark task runs (`mapInArrow`): picklable settings, and the scoring of
    one partition with its share of the budget."""

    models: tuple[str, ...]
    budget: Budget  # the job's; each partition takes its share
    slots: int
    connection: Connection
    pacing: Pacing
    columns: Columns
    lang: str
    counters: Counters | None

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        context = TaskContext.get()
        partition = context.partitionId() if context is not None else 0
        if context is not None and context.attemptNumber() > 0:
            log.warning(
                "lwbatch: partition %d, attempt %d: an earlier attempt failed, and this one "
                "scores the whole partition again (its requests are paid again)",
                partition,
                context.attemptNumber() + 1,
            )
        share = (
            self.budget if self.budget.is_unlimited else self.budget.share(self.slots, partition)
        )
        # The event loop runs in a thread of its own: Spark pulls output from this
        # generator while the loop pulls input from Spark's iterator, both bounded.
        ready: queue.Queue[pa.RecordBatch | BaseException | None] = queue.Queue(_AHEAD)
        # Set when Spark stops reading (limit(), a failed task): scoring stops too.
        closed = threading.Event()
        worker = threading.Thread(
            target=self._run,
            args=(share, batches, ready, closed),
            name=f"lwbatch-spark-task-{partition}",
            daemon=True,
        )
        worker.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            closed.set()
        worker.join()

    def _run(
        self,
        share: Budget,
        batches: Iterator[pa.RecordBatch],
        ready: queue.Queue[Any],
        closed: threading.Event,
    ) -> None:
        try:
            anyio.run(self._score, share, batches, ready, closed)
        except _Abandoned:
            return
        except BaseException as exc:  # handed to the task's own thread, which raises it
            error = primary_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
            if isinstance(error, _Abandoned):
                return
            _put(ready, error, closed)
            return
        _put(ready, None, closed)

    async def _score(
        self,
        share: Budget,
        batches: Iterator[pa.RecordBatch],
        ready: queue.Queue[Any],
        closed: threading.Event,
    ) -> None:
        columns = self.columns
        reader = RowReader(columns, wikipedia(self.lang))

        async def items() -> Any:
            while (batch := await anyio.to_thread.run_sync(next, batches, None)) is not None:
                wikis_ = batch.column(columns.wiki) if columns.wiki is not None else None
                pages = [batch.column(name) for name in columns.pages]
                # Row numbers within a partition mean nothing to the user: none.
                yield reader.convert(batch.column(columns.id_column), wikis_, pages, None)

        scorer = Scorer(
            list(self.models),
            rate=share,
            lang=self.lang,
            connection=self.connection,
            pacing=self.pacing,
        )
        buffer = RowBuffer(scorer.specs, columns.layout)

        async def hand_over() -> None:
            table, _ = buffer.take()
            for out in table.to_batches():
                if not await anyio.to_thread.run_sync(_put, ready, out, closed):
                    raise _Abandoned

        # Small batches first, so that a `limit()` that stops reading soon stops the
        # requests soon; then larger ones, which cost less per row.
        threshold = 16

        async def stop_when_closed(scope: anyio.CancelScope) -> None:
            # Between two hand-overs the scorer may send thousands of requests: once
            # Spark stops reading, stop them at once, not at the next hand-over.
            await anyio.to_thread.run_sync(closed.wait, abandon_on_cancel=True)
            scope.cancel()

        async with anyio.create_task_group() as watch:
            watch.start_soon(stop_when_closed, watch.cancel_scope)
            async with scorer:
                rows = scorer.score(items())
                async for row in rows:
                    buffer.add(row)
                    if len(buffer) >= threshold:
                        await hand_over()
                        threshold = min(2 * threshold, _ROWS_PER_BATCH)
            watch.cancel_scope.cancel()
        if closed.is_set():
            raise _Abandoned
        if len(buffer):
            await hand_over()
        if self.counters is not None:
            self.counters.add(rows.stats)


@dataclass(frozen=True, slots=True)
class Counters:
    """Spark accumulators for what every task did: rows read, invalid, duplicates,
    distinct keys and requests sent, and requests by outcome (HTTP status or failure
    kind); summed once an action has run, over the task attempts that succeeded."""

    rows_read: Any
    invalid_rows: Any
    duplicate_rows: Any
    distinct_revisions: Any
    requests_sent: Any
    requests_by_outcome: Any

    def add(self, stats: RunStats) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(stats, name)
            getattr(self, name).add(dict(value) if isinstance(value, dict) else value)

    def values(self) -> dict[str, int]:
        return {
            name: int(getattr(self, name).value)
            for name in self.__dataclass_fields__
            if name != "requests_by_outcome"
        }

    def outcomes(self) -> dict[str, int]:
        return dict(sorted(self.requests_by_outcome.value.items()))


class _SumByKey(AccumulatorParam[dict[str, int]]):
    def zero(self, value: dict[str, int]) -> dict[str, int]:
        return {}

    def addInPlace(self, value1: dict[str, int], value2: dict[str, int]) -> dict[str, int]:
        for key, count in value2.items():
            value1[key] = value1.get(key, 0) + count
        return value1


def counters(spark: SparkSession) -> Counters:
    """Fresh :class:`Counters` for one `score` call."""
    context = spark.sparkContext
    return Counters(
        rows_read=context.accumulator(0),
        invalid_rows=context.accumulator(0),
        duplicate_rows=context.accumulator(0),
        distinct_revisions=context.accumulator(0),
        requests_sent=context.accumulator(0),
        requests_by_outcome=context.accumulator({}, _SumByKey()),
    )


class _Abandoned(Exception):
    """Spark stopped reading this task's output: no more requests for it."""


def _put(ready: queue.Queue[Any], item: Any, closed: threading.Event) -> bool:
    """Hand `item` to the task's thread; False once that thread has stopped reading."""
    while not closed.is_set():
        try:
            ready.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


__all__ = ["Counters", "PartitionTask", "counters", "score"]
