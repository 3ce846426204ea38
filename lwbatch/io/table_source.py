"""An Arrow table in memory as a :class:`~lwbatch.seams.Source`: what :func:`lwbatch.score`
reads a list of rev_ids, a pyarrow Table or a pandas DataFrame as, with the key columns
decided and checked as for a file, and no temporary file."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from lwbatch.errors import UsageError
from lwbatch.io.columns import Columns, check_types
from lwbatch.io.row_reader import RowReader
from lwbatch.io.sources import plain
from lwbatch.keys import KeyLayout
from lwbatch.seams import Item
from lwbatch.settings import DEFAULT_BATCH_ROWS
from lwbatch.wikis import wikipedia


class TableSource:
    """A pyarrow Table's rows, in batches of `batch_rows`."""

    def __init__(
        self,
        table: pa.Table,
        *,
        id_column: str = "rev_id",
        lang: str = "en",
        wiki_column: str | None = None,
        keep_columns: Sequence[str] | str | None = None,
        label: str = "`revisions`",
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        if table.num_rows == 0:
            raise UsageError(f"{label} is empty: give at least one rev_id")
        self.label = label
        self.columns = Columns.decide(
            table.schema.names,
            id_column=id_column,
            wiki_column=wiki_column,
            keep_columns=keep_columns,
            where=label,
        )
        check_types(self.columns, table.schema, label)
        self.kept_fields = [plain(table.schema.field(name)) for name in self.columns.kept]
        self.default_wiki = wikipedia(lang)
        self._table = table
        self._batch_rows = batch_rows

    @property
    def name(self) -> str:
        return self.label

    @property
    def total_rows(self) -> int:
        return int(self._table.num_rows)

    @property
    def key_layout(self) -> KeyLayout:
        return self.columns.layout

    @property
    def page_columns(self) -> tuple[str, ...]:
        return self.columns.pages

    def fingerprint(self) -> dict[str, Any]:
        return {"table": self.label, "rows": self.total_rows}

    def batches(self) -> Iterator[list[Item]]:
        columns = self.columns
        reader = RowReader(columns, self.default_wiki)
        row = 1
        for batch in self._table.select(columns.read()).to_batches(self._batch_rows):
            wikis_ = batch.column(columns.wiki) if columns.wiki is not None else None
            pages = [batch.column(name) for name in columns.pages]
            kept = [batch.column(f.name) for f in self.kept_fields]
            yield reader.convert(batch.column(columns.id_column), wikis_, pages, row, kept)
            row += batch.num_rows


__all__ = ["TableSource"]
