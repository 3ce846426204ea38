"""Scoring in memory, for notebooks and small jobs: rev_ids or a table in, an Arrow table
out, and :func:`flatten` for a flat pandas DataFrame.

A thin layer over the engine: the same checks, budget, retries and merged rows as
:func:`lwbatch.score_file` (the same :class:`~lwbatch.job.Job`, reading the table in
memory), without a journal (a small job is asked again in full if it is interrupted;
use :func:`~lwbatch.score_file` with a file for anything large).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lwbatch.compat import accepts_old_keywords
from lwbatch.config import Budget, Tier
from lwbatch.errors import UsageError
from lwbatch.io.arrays import array
from lwbatch.io.table_source import TableSource
from lwbatch.job import Job
from lwbatch.settings import Connection, Files, Hooks, Pacing, RunSettings

if TYPE_CHECKING:
    import pandas as pd

# How messages name the in-memory input.
_LABEL = "`revisions`"


class TableSink:
    """A :class:`~lwbatch.seams.Sink` that keeps the merged rows in memory."""

    def __init__(self) -> None:
        self._schema: pa.Schema | None = None
        self._tables: list[pa.Table] = []
        self.table: pa.Table | None = None  # set by commit

    @property
    def name(self) -> str:
        return "the table returned"

    @property
    def rows_written(self) -> int:
        return sum(t.num_rows for t in self._tables)

    def open(self, schema: pa.Schema) -> None:
        self._schema = schema
        self._tables = []

    def write(self, rows: pa.Table) -> None:
        assert self._schema is not None, "open() the sink before writing"
        self._tables.append(rows.select(self._schema.names).cast(self._schema))

    def commit(self, metadata: Mapping[str, bytes]) -> None:
        assert self._schema is not None, "open() the sink before committing"
        self.table = pa.Table.from_batches(
            [b for t in self._tables for b in t.to_batches()], schema=self._schema
        )

    def abort(self) -> None:
        self._tables = []


def _as_table(revisions: Any, id_column: str) -> pa.Table:
    if isinstance(revisions, pa.Table):
        return revisions
    if _is_dataframe(revisions):
        return pa.Table.from_pandas(revisions, preserve_index=False)
    if isinstance(revisions, str | bytes) or not isinstance(revisions, Iterable):
        raise UsageError(
            "`revisions` must be rev_ids (a list of integers), a pyarrow Table or a "
            "pandas DataFrame"
        )
    values = list(revisions)
    if all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values):
        try:
            return pa.table({id_column: array(values, pa.int64())})
        except ValueError:  # beyond int64: the text path says which row
            pass
    # Other values: as text, each checked as CSV cells are (bad ones become invalid
    # rows, never silently dropped).
    ids = array([None if v is None else str(v) for v in values], pa.string())
    return pa.table({id_column: ids})


def _is_dataframe(value: object) -> bool:
    # pandas is imported only by the caller that has one.
    return type(value).__name__ == "DataFrame" and hasattr(value, "columns")


@accepts_old_keywords("connection", "pacing", "files", "hooks")
async def score_async(
    revisions: Iterable[int] | pa.Table | pd.DataFrame,
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
    with_report: bool = False,
) -> Any:
    """The awaitable form of :func:`score`, with the same arguments."""
    files = files or Files()
    if files.restart or not files.retry_failed or files.format is not None:
        raise UsageError(
            "`restart`, `retry_failed` and `format` are for score_file: lwbatch.score keeps "
            "no journal and returns a table"
        )
    if files.journal is not True and files.journal is not False:
        raise UsageError("`journal` is for score_file: lwbatch.score keeps no journal")
    settings = RunSettings.of(
        models,
        rate=rate,
        tier=tier,
        id_column=id_column,
        wiki_column=wiki_column,
        lang=lang,
        connection=connection,
        pacing=pacing,
        files=replace(files, journal=False, keep_columns=None),
        hooks=hooks,
    )
    source = TableSource(
        _as_table(revisions, id_column),
        id_column=id_column,
        lang=lang,
        wiki_column=wiki_column,
        keep_columns=files.keep_columns,
        label=_LABEL,
        batch_rows=files.batch_rows,
    )
    sink = TableSink()
    report = await Job(source, sink, settings).run()
    assert sink.table is not None
    return (sink.table, report) if with_report else sink.table


@accepts_old_keywords("connection", "pacing", "files", "hooks")
def score(
    revisions: Iterable[int] | pa.Table | pd.DataFrame,
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
    with_report: bool = False,
) -> Any:
    """Score `revisions` with `models`; the merged rows as an Arrow table (and the run's
    :class:`~lwbatch.RunReport` beside it, as ``(table, report)``, with `with_report`).

    `revisions` is a list of rev_ids, or a pyarrow Table or pandas DataFrame with an
    `id_column` (and, for several wikis, a ``lang`` or ``wiki_db`` column, or
    `wiki_column`). The other arguments are those of :func:`lwbatch.score_file`; no
    journal is kept, and ``files`` may name a `cache` and `keep_columns`. One row per
    distinct key, in no particular order (``.sort_by("rev_id")`` for one). Works in a
    notebook whose event loop is running: the run then has a thread of its own.

    >>> table = lwbatch.score([123, 456], models=["enwiki-damaging"])
    >>> lwbatch.flatten(table)  # a flat pandas DataFrame
    """
    call = partial(
        score_async,
        revisions,
        models=models,
        rate=rate,
        tier=tier,
        id_column=id_column,
        wiki_column=wiki_column,
        lang=lang,
        connection=connection,
        pacing=pacing,
        files=files,
        hooks=hooks,
        with_report=with_report,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call())
    # Inside a running loop (Jupyter): run ours on another thread and wait for it.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lwbatch") as pool:
        return pool.submit(asyncio.run, call()).result()


def flatten(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """The merged rows (a table, or a pandas DataFrame of them, as ``to_pandas()`` gives)
    as a flat pandas DataFrame: the key columns, then for each model
    ``MODEL.prediction``, one ``MODEL.LABEL`` column per probability label
    (``enwiki-damaging.true``), ``MODEL.model_version``, ``MODEL.error`` and
    ``MODEL.error_message``. ``rev_id`` stays an integer column (pandas' nullable
    ``Int64``: an invalid row's rev_id may be missing). Needs pandas."""
    try:
        import pandas as pd
    except ImportError:
        raise UsageError("flatten needs pandas: pip install pandas") from None
    if _is_dataframe(table):
        table = _from_frame(table)
    if not isinstance(table, pa.Table):
        raise UsageError(
            "flatten takes the rows lwbatch.score returns (a pyarrow Table) or a pandas "
            f"DataFrame of them, not {type(table).__name__}"
        )
    columns: dict[str, pa.ChunkedArray] = {}
    for field in table.schema:
        column = table.column(field.name)
        if not pa.types.is_struct(field.type):
            columns[field.name] = column
            continue
        for part in field.type:
            values = pc.struct_field(column, part.name)
            if part.name != "probability":
                columns[f"{field.name}.{part.name}"] = values
                continue
            merged = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
            labels = pc.unique(merged.keys).to_pylist()
            for label in labels:
                columns[f"{field.name}.{label}"] = pc.map_lookup(values, label, "first")
    flat = pa.table(columns)
    frame: pd.DataFrame = flat.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    return frame


def _from_frame(frame: Any) -> pa.Table:
    """A DataFrame of merged rows (``to_pandas()``: a dict per model cell, probabilities
    as (label, p) pairs) back as the Arrow table it came from."""
    columns: dict[str, pa.Array] = {}
    for name in frame.columns:
        cells = frame[name].tolist()
        sample = next((c for c in cells if c is not None), None)
        if isinstance(sample, dict) and "error" in sample:
            columns[str(name)] = _answers(cells)
        else:
            column = pa.Array.from_pandas(frame[name])
            if name == "rev_id" and pa.types.is_floating(column.type):
                # to_pandas() made an id column with a missing value float64; its
                # values are whole numbers (or null), as the table had them.
                column = column.cast(pa.int64())
            columns[str(name)] = column
    return pa.table(columns)


def _answers(cells: list[Any]) -> pa.StructArray:
    parts: dict[str, pa.Array] = {}
    for key in ("prediction", "probability", "model_version", "error", "error_message"):
        values = [None if cell is None else cell.get(key) for cell in cells]
        if key == "probability":
            pairs = [
                None if v is None else list(v.items() if isinstance(v, dict) else map(tuple, v))
                for v in values
            ]
            parts[key] = pa.array(pairs, pa.map_(pa.string(), pa.float64()))
        else:
            parts[key] = pa.array(values)
    return pa.StructArray.from_arrays(list(parts.values()), names=list(parts))


__all__ = ["TableSink", "flatten", "score", "score_async"]
