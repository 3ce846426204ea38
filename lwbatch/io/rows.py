"""Merged rows as Arrow: the layout every sink receives and the journal keeps.

One row per key: the key columns (lwbatch/keys.py), the input columns kept
(`keep_columns`, the first row's values of a key), then one struct column per model,
named exactly as the model was named (``{wiki}-damaging`` too): prediction, probability,
model_version, error, error_message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from lwbatch.io.arrays import array
from lwbatch.keys import KeyLayout
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import ScoredRow

_PREDICTION_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "string": pa.string(),
    "list": pa.list_(pa.string()),
    "double": pa.float64(),
}


# How each answer was got: in the rows the journal keeps and the formats that ask for
# them (`long`), not in the merged Parquet output.
DETAIL = (pa.field("latency_ms", pa.float64()), pa.field("attempts", pa.int32()))


def score_type(spec: ModelSpec, *, detail: bool = False) -> pa.StructType:
    """The struct of one model's column (with `detail`, latency_ms and attempts too)."""
    return pa.struct(
        [
            pa.field("prediction", _PREDICTION_TYPES[spec.family.prediction]),
            pa.field("probability", pa.map_(pa.string(), pa.float64())),
            pa.field("model_version", pa.string()),
            pa.field("error", pa.string()),
            pa.field("error_message", pa.string()),
            *(DETAIL if detail else ()),
        ]
    )


def output_schema(
    specs: Sequence[ModelSpec],
    layout: KeyLayout | None = None,
    kept: Sequence[pa.Field] = (),
    *,
    detail: bool = False,
) -> pa.Schema:
    """The key columns, the kept input columns, then one struct column per model."""
    keys = (layout or KeyLayout()).fields
    models = [pa.field(s.name, score_type(s, detail=detail)) for s in specs]
    return pa.schema([*keys, *kept, *models])


def wiki_column_of(schema: pa.Schema) -> str | None:
    """The merged layout's wiki key column: the one before rev_id, if any."""
    return schema.names[0] if schema.names.index("rev_id") == 1 else None


def without_detail(table: pa.Table) -> pa.Table:
    """Merged rows without latency_ms and attempts (the merged Parquet layout)."""
    drop = {f.name for f in DETAIL}
    columns = []
    fields = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_struct(field.type) and drop & {f.name for f in field.type}:
            keep = [f for f in field.type if f.name not in drop]
            chunks = [
                pa.StructArray.from_arrays(
                    [chunk.field(f.name) for f in keep],
                    fields=keep,
                    # is_null() imports pyarrow.compute (~9 MB); a model's column has
                    # no null struct in the rows lwbatch makes.
                    mask=chunk.is_null() if chunk.null_count else None,
                )
                for chunk in column.chunks
            ]
            column = pa.chunked_array(chunks, pa.struct(keep))
            field = field.with_type(pa.struct(keep))  # keeps the field's metadata
        columns.append(column)
        fields.append(field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, table.schema.metadata))


class RowBuffer:
    """Collects merged rows column by column and hands them out as one table.

    Rows wait as Python values only until :meth:`seal`: a model's answer takes about
    600 bytes as a Score and its dict, and about 60 in Arrow, so a caller that seals
    every few hundred rows holds a segment's rows in a tenth of the memory.
    """

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        layout: KeyLayout | None = None,
        kept: Sequence[pa.Field] = (),
        *,
        detail: bool = False,
    ) -> None:
        self.specs = list(specs)
        self.layout = layout or KeyLayout()
        self.kept = list(kept)
        self.detail = detail
        self.schema = output_schema(self.specs, self.layout, self.kept, detail=detail)
        self._types = [score_type(s, detail=detail) for s in self.specs]
        self._sealed: list[pa.Table | None] = []
        self._sealed_rows = 0
        self.invalid_rows: list[int] = []
        self._reset()

    def _reset(self) -> None:
        self._rev_ids: list[int | None] = []
        self._wikis: list[str | None] = []
        self._kept_values: list[list[Any]] = [[] for _ in self.kept]
        fields = 7 if self.detail else 5
        self._columns: dict[str, list[list[Any]]] = {
            s.name: [[] for _ in range(fields)] for s in self.specs
        }

    def __len__(self) -> int:
        return self._sealed_rows + len(self._rev_ids)

    @property
    def pending(self) -> int:
        """Rows still held as Python values (not sealed yet)."""
        return len(self._rev_ids)

    def add(self, row: ScoredRow) -> None:
        # An invalid row keeps the raw values it had, where they fit the columns.
        self._rev_ids.append(row.rev_id)
        self._wikis.append(row.wiki)
        if row.row is not None:
            self.invalid_rows.append(row.row)
        if self.kept:
            values = row.kept or (None,) * len(self.kept)
            for column, value in zip(self._kept_values, values, strict=True):
                column.append(value)
        for name, columns in self._columns.items():
            score = row.scores[name]
            columns[0].append(score.prediction)
            columns[1].append(score.probability)
            columns[2].append(score.model_version)
            columns[3].append(None if score.error is None else score.error.value)
            columns[4].append(score.error_message)
            if self.detail:
                columns[5].append(score.latency_ms)
                columns[6].append(score.attempts)

    def seal(self) -> Callable[[], None]:
        """Take the pending rows at once; what turns them into Arrow in their place
        among the buffer's rows (on any thread; tables are ordered by when they were
        sealed, not built)."""
        rows, build = self._builder()
        parts, place = self._sealed, len(self._sealed)
        parts.append(None)
        self._sealed_rows += rows

        def run() -> None:
            parts[place] = build()

        return run

    def take(self) -> tuple[pa.Table, list[int]]:
        """The buffered rows as a table, and the input row numbers of invalid ones."""
        return self.detach()()

    def detach(self) -> Callable[[], tuple[pa.Table, list[int]]]:
        """Empty the buffer at once; what builds the table of its rows (on any thread:
        the building is most of the cost, tens of ms per segment). Every seal's builder
        must have run first."""
        sealed, invalid = self._sealed, self.invalid_rows
        last = self._builder()[1] if self._rev_ids or not sealed else None
        self._sealed, self._sealed_rows, self.invalid_rows = [], 0, []

        def build() -> tuple[pa.Table, list[int]]:
            tables = [t for t in sealed if t is not None]
            if len(tables) != len(sealed):
                raise RuntimeError("RowBuffer.detach before every sealed part was built")
            if last is not None:
                tables.append(last())
            if len(tables) == 1:
                return tables[0], invalid
            return pa.concat_tables(tables), invalid

        return build

    def _builder(self) -> tuple[int, Callable[[], pa.Table]]:
        """Empty the pending rows; how many they were and what builds their table."""
        rev_ids, wikis, kept_values = self._rev_ids, self._wikis, self._kept_values
        columns = self._columns
        self._reset()

        def build() -> pa.Table:
            arrays: list[pa.Array] = [array(rev_ids, pa.int64())]
            if self.layout.wiki_column is not None:
                arrays.insert(0, array(wikis, pa.string()))
            for field, values in zip(self.kept, kept_values, strict=True):
                arrays.append(array(values, field.type))
            for spec, struct_type in zip(self.specs, self._types, strict=True):
                children = [
                    array(values, struct_type.field(i).type)
                    for i, values in enumerate(columns[spec.name])
                ]
                arrays.append(pa.StructArray.from_arrays(children, fields=list(struct_type)))
            return pa.Table.from_arrays(arrays, schema=self.schema)

        return len(rev_ids), build
