"""Scoring in memory, for notebooks and small jobs: rev_ids or a table in, an Arrow table
out, and :func:`flatten` for a flat pandas DataFrame.

A thin layer over the engine: the same checks, budget, retries and merged rows as
:func:`lwbatch.score_file`, without a journal (a small job is asked again in full if
it is interrupted; use :func:`~lwbatch.score_file` with a file for anything large).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lwbatch.errors import UsageError
from lwbatch.io.sources import open_source
from lwbatch.run import score_file_async

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
    if type(revisions).__name__ == "DataFrame" and hasattr(revisions, "columns"):
        return pa.Table.from_pandas(revisions, preserve_index=False)
    if isinstance(revisions, str | bytes) or not isinstance(revisions, Iterable):
        raise UsageError(
            "`revisions` must be rev_ids (a list of integers), a pyarrow Table or a "
            "pandas DataFrame"
        )
    values = list(revisions)
    try:
        ids = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed values: as text, each checked as CSV cells are (bad ones become
        # invalid rows, never silently dropped).
        ids = pa.array([None if v is None else str(v) for v in values], pa.string())
    if pa.types.is_null(ids.type):
        ids = ids.cast(pa.int64())
    return pa.table({id_column: ids})


async def score_async(
    revisions: Iterable[int] | pa.Table | pd.DataFrame,
    *,
    models: Sequence[str],
    id_column: str = "rev_id",
    lang: str = "en",
    wiki_column: str | None = None,
    **options: Any,
) -> pa.Table:
    """The awaitable form of :func:`score`, with the same arguments."""
    table = _as_table(revisions, id_column)
    if table.num_rows == 0:
        raise UsageError("`revisions` is empty: give at least one rev_id")
    for name in ("journal", "restart", "retry_failed", "format", "on_start"):
        if name in options:
            raise UsageError(f"`{name}` is for score_file: lwbatch.score keeps no journal")
    sink = TableSink()
    with tempfile.TemporaryDirectory(prefix="lwbatch-") as folder:
        path = Path(folder) / "revisions.parquet"
        pq.write_table(table, path)
        source = open_source(
            path,
            id_column=id_column,
            lang=lang,
            wiki_column=wiki_column,
            label=_LABEL,
            keep_columns=options.pop("keep_columns", None),
        )
        await score_file_async(
            source,
            sink,
            models=models,
            id_column=id_column,
            lang=lang,
            wiki_column=wiki_column,
            journal=False,
            **options,
        )
    assert sink.table is not None
    return sink.table


def score(
    revisions: Iterable[int] | pa.Table | pd.DataFrame,
    *,
    models: Sequence[str],
    id_column: str = "rev_id",
    lang: str = "en",
    wiki_column: str | None = None,
    **options: Any,
) -> pa.Table:
    """Score `revisions` with `models`; the merged rows as an Arrow table.

    `revisions` is a list of rev_ids, or a pyarrow Table or pandas DataFrame with an
    `id_column` (and, for several wikis, a ``lang`` column or `wiki_column`). Other
    arguments are those of :func:`lwbatch.score_file` (`endpoint`, `token`, `tier`,
    `budget`, `cache`, ...). One row per distinct key, in no particular order
    (``.sort_by("rev_id")`` for one). Works in a notebook whose event loop is running:
    the run then has a thread of its own.

    >>> table = lwbatch.score([123, 456], models=["enwiki-damaging"])
    >>> lwbatch.flatten(table)  # a flat pandas DataFrame
    """
    call = partial(
        score_async,
        revisions,
        models=models,
        id_column=id_column,
        lang=lang,
        wiki_column=wiki_column,
        **options,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call())
    # Inside a running loop (Jupyter): run ours on another thread and wait for it.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lwbatch") as pool:
        return pool.submit(asyncio.run, call()).result()


def flatten(table: pa.Table) -> pd.DataFrame:
    """The merged rows as a flat pandas DataFrame: the key columns, then for each model
    ``MODEL.prediction``, one ``MODEL.LABEL`` column per probability label
    (``enwiki-damaging.true``), ``MODEL.model_version``, ``MODEL.error`` and
    ``MODEL.error_message``. ``rev_id`` stays an integer column (pandas' nullable
    ``Int64``: an invalid row's rev_id may be missing). Needs pandas."""
    try:
        import pandas as pd
    except ImportError:
        raise UsageError("flatten needs pandas: pip install pandas") from None
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


__all__ = ["TableSink", "flatten", "score", "score_async"]
