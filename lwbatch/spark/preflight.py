"""Before a Spark job's tasks start, the driver asks each model the job will call about
one real row of each wiki of the input: a 401, a model deployed nowhere or an endpoint
that cannot be reached then ends the job at once, with the local engine's one line,
instead of after `spark.task.maxFailures` attempts that each pay. The answers are kept
(the tasks do not ask them again) and the requests count in the tasks' shares."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import pyarrow as pa

from lwbatch.config import Budget
from lwbatch.durability.answer_log import decode_answer, encode_answer
from lwbatch.engine.resume import RETRYABLE
from lwbatch.engine.scorer import Scorer
from lwbatch.engine.stats import RunStats
from lwbatch.engine.targets import Targets
from lwbatch.io.columns import Columns
from lwbatch.io.row_reader import RowReader
from lwbatch.keys import RowKey
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import Revision, Score
from lwbatch.seams import ScoreCache
from lwbatch.settings import Connection, Hooks, Pacing
from lwbatch.wikis import Wiki


@dataclass(frozen=True, slots=True)
class Checked:
    """The pre-flight's answers (journal lines) and when its requests left (wall clock)."""

    answers: tuple[bytes, ...] = ()
    sent: tuple[float, ...] = ()
    stats: RunStats = field(default_factory=RunStats)


def sample(df: Any, columns: Columns, keys: list[Any]) -> pa.Table:
    """One row of each wiki of `df` whose rev_id is a number (`keys`: the wiki and
    rev_id as the partitioning sees them), as Arrow."""
    from pyspark.sql import functions as F

    named = [k.alias(f"__lwbatch_key{i}") for i, k in enumerate(keys)]
    usable = df.select(*columns.read(), *named).where(F.col(f"__lwbatch_key{len(keys) - 1}") > 0)
    if len(keys) == 2:
        picked = usable.dropDuplicates(["__lwbatch_key0"])
    else:
        picked = usable.limit(1)
    return picked.select(*columns.read()).toArrow()


def revisions(
    table: pa.Table, columns: Columns, default: Wiki, specs: Sequence[ModelSpec]
) -> tuple[list[Revision], set[str]]:
    """Of the sampled rows, those that give each concrete model one row to answer; and
    the concrete models the job calls."""
    reader = RowReader(columns, default)
    wikis = table.column(columns.wiki) if columns.wiki is not None else None
    items = reader.convert(
        table.column(columns.id_column).combine_chunks(),
        wikis.combine_chunks() if wikis is not None else None,
        [table.column(name).combine_chunks() for name in columns.pages],
        None,
    )
    targets = Targets(list(specs), default)
    chosen: dict[RowKey, Revision] = {}
    asked: set[str] = set()
    for item in items:
        if not isinstance(item, Revision):
            continue
        for spec in specs:
            target = targets.of(spec, item)
            if isinstance(target, Score) or target.name in asked:
                continue
            asked.add(target.name)
            chosen.setdefault(item.key, item)
    return list(chosen.values()), asked


def check(
    rows: list[Revision],
    models: Sequence[str],
    *,
    budget: Budget,
    lang: str,
    connection: Connection,
    pacing: Pacing,
    cache: ScoreCache | None = None,
    known: Sequence[bytes] = (),
) -> Checked:
    """Ask `models` about `rows` inside `budget` (what `cache` holds costs nothing);
    raises what the local engine would (a 401, every model not deployed, an
    unreachable endpoint). `known`: answers an earlier run's pre-flight kept; rows they
    answer for every model are not asked again, and they are kept with the new ones."""
    earlier = [a for a in map(decode_answer, known) if a is not None]
    final = {
        (model, key)
        for model, key, score in earlier
        if score.error is None or score.error.value not in RETRYABLE
    }
    rows = [r for r in rows if any((m, r.key) not in final for m in models)]
    kept = tuple(encode_answer(m, k, s) for m, k, s in earlier if (m, k) in final)
    if not rows:
        return Checked(kept)
    # In a thread of its own: a notebook's thread already runs an event loop.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lwbatch-preflight") as pool:
        checked = pool.submit(
            anyio.run, _check, rows, models, budget, lang, connection, pacing, cache
        ).result()
    return replace(checked, answers=kept + checked.answers)


async def _check(
    rows: list[Revision],
    models: Sequence[str],
    budget: Budget,
    lang: str,
    connection: Connection,
    pacing: Pacing,
    cache: ScoreCache | None,
) -> Checked:
    answers: list[bytes] = []
    sent: list[float] = []
    offset = time.time() - time.monotonic()

    def keep(model: str, scored: list[tuple[RowKey, Score]]) -> None:
        answers.extend(
            encode_answer(model, key, score)
            for key, score in scored
            if score.error is None or score.error.value not in RETRYABLE
        )

    scorer = Scorer(
        list(models),
        rate=budget,
        lang=lang,
        connection=connection,
        pacing=replace(pacing, share=False),
        cache=cache,
        hooks=Hooks(on_send=lambda t: sent.append(t + offset)),
    )
    async with scorer:
        call = scorer.score(rows, on_answer=keep)
        async for _ in call:
            pass
    return Checked(tuple(answers), tuple(sent), call.stats)


__all__ = ["Checked", "check", "revisions", "sample"]
