"""Tidy Parquet for analysts (`--format long`): one row per (key, model) instead of one
struct column per model, so that a group-by or a filter on the model needs no unnesting.

Columns: the key columns and kept input columns, then ``model`` (a template's column
becomes each row's own wiki's model, ``enwiki-damaging``), ``model_version``,
``prediction`` as text (``true``, ``0.73``, ``Stub``, JSON for topic lists),
``probability``, ``error``, ``error_message``, ``latency_ms`` and ``attempts`` (the
requests this answer took in the run that got it; null where it took none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
import pyarrow as pa

from lwbatch.io.arrays import array
from lwbatch.io.parquet_sink import ParquetSink
from lwbatch.io.rows import wiki_column_of
from lwbatch.protocol.catalog import TEMPLATE, ModelSpec
from lwbatch.wikis import wikipedia, wikis

_ANSWER = [
    pa.field("model", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("prediction", pa.string()),
    pa.field("probability", pa.map_(pa.string(), pa.float64())),
    pa.field("error", pa.string()),
    pa.field("error_message", pa.string()),
    pa.field("latency_ms", pa.float64()),
    pa.field("attempts", pa.int32()),
]


class LongSink:
    """Writes merged rows (with their detail) as long rows to one Parquet file, through
    :class:`ParquetSink` (the same temporary file and atomic commit)."""

    detailed = True  # wants latency_ms and attempts

    def __init__(self, path: Path | str, *, specs: Sequence[ModelSpec], lang: str = "en") -> None:
        self._out = ParquetSink(path)
        self._columns = [s.name for s in specs]
        self._default_wiki = wikipedia(lang).dbname
        self._front: list[str] = []
        self._wiki_column: str | None = None
        self._rows = 0

    @property
    def name(self) -> str:
        return self._out.name

    @property
    def rows_written(self) -> int:
        return self._rows  # merged rows: the run's accounting counts those

    def open(self, schema: pa.Schema) -> None:
        self._front = [n for n in schema.names if n not in self._columns]
        self._wiki_column = wiki_column_of(schema)
        fields = [schema.field(n) for n in self._front]
        self._out.open(pa.schema([*fields, *_ANSWER]))
        self._rows = 0

    def write(self, rows: pa.Table) -> None:
        parts = [self._long(rows, column) for column in self._columns]
        if parts:
            self._out.write(pa.concat_tables(parts))
        self._rows += rows.num_rows

    def _long(self, rows: pa.Table, column: str) -> pa.Table:
        answers = rows.column(column).combine_chunks()
        return pa.Table.from_arrays(
            [
                *(rows.column(name) for name in self._front),
                array(self._models(rows, column), pa.string()),
                answers.field("model_version"),
                _as_text(answers.field("prediction")),
                answers.field("probability"),
                answers.field("error"),
                answers.field("error_message"),
                _detail(answers, "latency_ms", pa.float64()),
                _detail(answers, "attempts", pa.int32()),
            ],
            names=[*self._front, *(f.name for f in _ANSWER)],
        )

    def _models(self, rows: pa.Table, column: str) -> list[str]:
        if TEMPLATE not in column:
            return [column] * rows.num_rows
        if self._wiki_column is None:
            return [column.replace(TEMPLATE, self._default_wiki)] * rows.num_rows
        table = wikis()
        out = []
        for value in rows.column(self._wiki_column).to_pylist():
            wiki = (table.by_dbname.get(value) or table.by_lang.get(value)) if value else None
            if value and wiki is None:
                # An invalid row's value names no wiki, so no model: the column's name.
                out.append(column)
            else:
                out.append(column.replace(TEMPLATE, wiki.dbname if wiki else self._default_wiki))
        return out

    def commit(self, metadata: Mapping[str, bytes]) -> None:
        # No manifest: a finished long output is not read back to resume from.
        self._out.commit({})

    def abort(self) -> None:
        self._out.abort()

    def __repr__(self) -> str:
        return f"<LongSink {self._out.path}>"


def _detail(answers: pa.StructArray, name: str, kind: pa.DataType) -> pa.Array:
    # Rows adopted from a finished output, or kept by an older lwbatch, have none.
    if answers.type.get_field_index(name) < 0:
        return pa.nulls(len(answers), kind)
    return answers.field(name)


def _as_text(prediction: pa.Array) -> pa.Array:
    kind = prediction.type
    if pa.types.is_string(kind):
        return prediction
    if pa.types.is_boolean(kind) or pa.types.is_floating(kind):
        import pyarrow.compute as pc  # this format only: ~9 MB imported

        return pc.cast(prediction, pa.string())
    return array(
        [None if v is None else orjson.dumps(v).decode() for v in prediction.to_pylist()],
        pa.string(),
    )


__all__ = ["LongSink"]
