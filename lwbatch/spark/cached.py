"""The score cache and a Spark job: the cache (an SQLite file on the driver's machine)
is read by the driver and handed to the tasks through the progress area, on the
output's file system, which executors on any machine reach; the job's fresh answers,
kept in the progress area, are added to the cache when the job is done."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from itertools import groupby

import pyarrow as pa

from lwbatch.cache import SqliteScoreCache
from lwbatch.durability.answer_log import Answer
from lwbatch.durability.progress import CACHE, SCHEMA, ProgressArea


def cache_answers(cache: SqliteScoreCache, models: Collection[str]) -> Iterator[pa.Table]:
    """What `cache` holds for `models`, as progress answers keyed by (wiki, rev_id)."""
    for batch in cache.answer_lines(models):
        yield pa.table(
            {
                "model": [m for m, _, _, _ in batch],
                "wiki": [w for _, w, _, _ in batch],
                "rev_id": [r for _, _, r, _ in batch],
                "answer": [line.encode() for _, _, _, line in batch],
                "kind": [CACHE] * len(batch),
            },
            schema=SCHEMA,
        )


def fold_into(cache: SqliteScoreCache, area: ProgressArea) -> int:
    """Add the fresh answers the job's tasks kept for the cache; how many were seen."""
    seen = 0
    batch: list[Answer] = []
    for answer in area.answers(CACHE):
        batch.append(answer)
        if len(batch) >= 65536:
            seen += _put(cache, batch)
            batch = []
    return seen + _put(cache, batch)


def _put(cache: SqliteScoreCache, answers: list[Answer]) -> int:
    for model, group in groupby(sorted(answers, key=lambda a: a[0]), key=lambda a: a[0]):
        cache.put(model, [(key.wiki, key.rev_id, score) for _, key, score in group])
    return len(answers)


__all__ = ["cache_answers", "fold_into"]
