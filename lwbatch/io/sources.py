"""Input files -> batches of revisions, streamed with pyarrow (never the whole file).

Rows whose rev_id is null, not an integer or <= 0, or whose wiki names no wiki, come
out as :class:`InvalidRow` so they are reported and written, never silently dropped
(lwbatch/io/row_reader.py). Which columns key the rows, and which are kept, is decided
once for every kind of input (lwbatch/io/columns.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lwbatch.errors import InputError
from lwbatch.io.columns import Columns, check_types
from lwbatch.io.row_reader import RowReader
from lwbatch.keys import KeyLayout
from lwbatch.seams import Item
from lwbatch.settings import DEFAULT_BATCH_ROWS
from lwbatch.wikis import wikipedia

_FINGERPRINT_BYTES = 1 << 20
# What a source's _arrays yields per batch: ids, wikis, page columns, kept columns.
Arrays = tuple[pa.Array, pa.Array | None, list[pa.Array], list[pa.Array]]


class FileSource:
    """What Parquet and CSV inputs share: checks on open, row numbering, id parsing."""

    format = ""

    def __init__(
        self,
        path: Path | str,
        *,
        id_column: str = "rev_id",
        lang: str = "en",
        wiki_column: str | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        label: str | None = None,
        keep_columns: Sequence[str] | str | None = None,
    ) -> None:
        self.path = Path(path)
        # Input columns carried to the output: names, or "all" (every non-key column).
        self.keep_columns = keep_columns
        self.kept_fields: list[pa.Field] = []
        # How messages and the resume fingerprint name the input ("-" for stdin spooled
        # to a temporary file); the path itself by default.
        self.label = label
        self.id_column = id_column
        self.default_wiki = wikipedia(lang)
        self.wiki_column = wiki_column
        self.batch_rows = batch_rows
        # Decided when the file is opened (lwbatch/io/columns.py).
        self.columns = Columns(id_column, None, "lang", (), ())
        self._total_rows: int | None = None
        check_file(self.path, self.name)
        self._open()

    @property
    def key_layout(self) -> KeyLayout:
        return self.columns.layout

    @property
    def page_columns(self) -> tuple[str, ...]:
        """The columns naming each row's page: page_id and/or page_title."""
        return self.columns.pages

    @property
    def name(self) -> str:
        return self.label if self.label is not None else str(self.path)

    @property
    def total_rows(self) -> int | None:
        return self._total_rows

    def fingerprint(self) -> dict[str, Any]:
        """Size plus a hash of the first and last MiB: cheap, and changes when the data does."""
        path = self.path
        size = path.stat().st_size
        digest = hashlib.blake2b(digest_size=16)
        with path.open("rb") as fh:
            digest.update(fh.read(_FINGERPRINT_BYTES))
            if size > _FINGERPRINT_BYTES:
                fh.seek(max(size - _FINGERPRINT_BYTES, _FINGERPRINT_BYTES))
                digest.update(fh.read())
        named = self.label if self.label is not None else str(path.resolve())
        return {"path": named, "size": size, "blake2b": digest.hexdigest()}

    def _open(self) -> None:
        raise NotImplementedError

    def _arrays(self) -> Iterator[Arrays]:
        raise NotImplementedError

    def _decide(self, names: Sequence[str]) -> None:
        self.columns = Columns.decide(
            names,
            id_column=self.id_column,
            wiki_column=self.wiki_column,
            keep_columns=self.keep_columns,
            where=self.name,
        )

    def _split(self, batch: pa.RecordBatch) -> Arrays:
        """A batch read with ``columns.read()`` -> what :meth:`_arrays` yields."""
        # By name: a reader may give the columns in the file's order, not the one asked.
        columns = self.columns
        wikis_ = batch.column(columns.wiki) if columns.wiki is not None else None
        pages = [batch.column(name) for name in columns.pages]
        kept = [batch.column(f.name) for f in self.kept_fields]
        return batch.column(columns.id_column), wikis_, pages, kept

    def batches(self) -> Iterator[list[Item]]:
        """Lists of revisions and invalid rows, in input order."""
        reader = RowReader(self.columns, self.default_wiki)
        row = 1
        try:
            for ids, wiki_values, pages, kept in _head_first(self._arrays()):
                yield reader.convert(ids, wiki_values, pages, row, kept)
                row += len(ids)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"unreadable after row {row - 1} ({first_line(exc)})", path=self.name
            ) from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"


# Rows in the first batch: the first requests wait for its conversion, which a full
# batch (65,536 rows) takes ~100 ms of.
HEAD_ROWS = 1024
# Rows converted to Python values at a time: a revision takes ~130 bytes as objects and
# 8 in Arrow, so a whole batch converted at once (65,536 rows, or a CSV block of 100,000
# and more) held 8+ MB of them.
PIECE_ROWS = 8192


def _head_first(batches: Iterator[Arrays]) -> Iterator[Arrays]:
    """`batches` in pieces of at most PIECE_ROWS rows; the first one of HEAD_ROWS."""
    size = HEAD_ROWS
    for ids, wikis_, pages, kept in batches:
        start = 0
        while start < len(ids):
            yield (
                ids.slice(start, size),
                None if wikis_ is None else wikis_.slice(start, size),
                [a.slice(start, size) for a in pages],
                [a.slice(start, size) for a in kept],
            )
            start += size
            size = PIECE_ROWS


class ParquetSource(FileSource):
    """A Parquet file, read one record batch at a time (never the whole file)."""

    format = "parquet"

    def _open(self) -> None:
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"not a readable Parquet file ({first_line(exc)})", path=self.name
            ) from None
        schema = pf.schema_arrow
        self._decide(schema.names)
        check_types(self.columns, schema, self.name)
        if pf.metadata.num_rows == 0:
            raise InputError("has no rows", path=self.name)
        self._total_rows = pf.metadata.num_rows
        self.kept_fields = [plain(schema.field(name)) for name in self.columns.kept]

    def _arrays(self) -> Iterator[Arrays]:
        pf = pq.ParquetFile(self.path)
        columns = self.columns.read()
        for batch in pf.iter_batches(batch_size=self.batch_rows, columns=columns):
            yield self._split(batch)


class CsvSource(FileSource):
    """A CSV or TSV file (optionally compressed), streamed in blocks by pyarrow."""

    format = "csv"

    def __init__(self, path: Path | str, *, delimiter: str = ",", **options: Any) -> None:
        self._delimiter = delimiter
        super().__init__(path, **options)

    def _open(self) -> None:
        names = self._header()
        self._decide(names)
        self.kept_fields = [pa.field(n, pa.string()) for n in self.columns.kept]
        if next(self._arrays(), None) is None:
            raise InputError("has a header but no rows", path=self.name)

    def _header(self) -> list[str]:
        try:
            with pa.input_stream(str(self.path), compression="detect") as stream:
                head = stream.read(1 << 16)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"cannot read it ({first_line(exc)})", path=self.name) from None
        text = head.decode("utf-8", "replace").lstrip("\ufeff")
        line = text.splitlines()[0] if text.strip() else ""
        names = next(csv.reader(io.StringIO(line), delimiter=self._delimiter), [])
        if not names:
            raise InputError("is empty (no header line)", path=self.name)
        return names

    def _arrays(self) -> Iterator[Arrays]:
        columns = self.columns.read()
        try:
            reader = pacsv.open_csv(
                str(self.path),
                read_options=pacsv.ReadOptions(block_size=1 << 20),
                parse_options=pacsv.ParseOptions(delimiter=self._delimiter),
                # Read ids as text: a type inferred from the first block breaks on a
                # later block, and text lets each bad value become one invalid row.
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in columns},
                    include_columns=columns,
                    strings_can_be_null=True,
                    # Only an empty cell is null: pyarrow's default list holds "nan",
                    # the language code of zh_min_nanwiki.
                    null_values=[""],
                ),
            )
            for batch in reader:
                if batch.num_rows:
                    yield self._split(batch)
        except pa.ArrowException as exc:
            raise InputError(
                f"cannot parse it as CSV ({first_line(exc)})", path=self.name
            ) from None


def plain(field: pa.Field) -> pa.Field:
    """A kept column's field as the output holds it: dictionary-encoded text decoded."""
    if pa.types.is_dictionary(field.type):
        return pa.field(field.name, field.type.value_type)
    return pa.field(field.name, field.type)


def check_file(path: Path, name: str | None = None) -> None:
    said = name if name is not None else path
    if not path.exists():
        raise InputError("no such file", path=said)
    if path.is_dir():
        raise InputError("is a directory; give one Parquet or CSV file", path=said)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read it ({exc.strerror})", path=said) from None
    if size == 0:
        raise InputError("is empty (0 bytes)", path=said)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = [
    "DEFAULT_BATCH_ROWS",
    "Arrays",
    "CsvSource",
    "FileSource",
    "ParquetSource",
    "check_file",
    "first_line",
    "plain",
]
