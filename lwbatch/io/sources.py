"""Input files -> batches of revisions, streamed with pyarrow (never the whole file).

Rows whose rev_id is null, not an integer or <= 0 come out as :class:`InvalidRow` so
they are reported and written, never silently dropped.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lwbatch.errors import InputError
from lwbatch.results import InvalidRow, Revision

Item = Revision | InvalidRow
INT64_MAX = 2**63 - 1
DEFAULT_BATCH_ROWS = 65_536
LANG_COLUMN = "lang"
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_PARQUET = (".parquet", ".pq")
_CSV = {".csv": ",", ".tsv": "\t"}
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")


@dataclass(frozen=True, slots=True)
class SourceInfo:
    path: Path
    format: str
    id_column: str
    has_lang: bool
    total_rows: int | None  # known up front for Parquet only


class Source:
    """A validated input file. :meth:`batches` streams it; open errors are raised early."""

    def __init__(
        self,
        path: Path | str,
        *,
        id_column: str = "rev_id",
        default_lang: str = "en",
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        self.path = Path(path)
        self.id_column = id_column
        self.default_lang = default_lang
        self.batch_rows = batch_rows
        self._delimiter = ","
        self.info = self._open()

    def _open(self) -> SourceInfo:
        path = self.path
        if not path.exists():
            raise InputError("no such file", path=path)
        if path.is_dir():
            raise InputError("is a directory; give one Parquet or CSV file", path=path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InputError(f"cannot read it ({exc.strerror})", path=path) from None
        if size == 0:
            raise InputError("is empty (0 bytes)", path=path)
        suffixes = [s.lower() for s in path.suffixes]
        if suffixes and suffixes[-1] in _COMPRESSED:
            suffixes = suffixes[:-1]
        kind = suffixes[-1] if suffixes else ""
        if kind in _PARQUET:
            return self._open_parquet()
        if kind in _CSV:
            self._delimiter = _CSV[kind]
            return self._open_csv()
        raise InputError(
            f"unknown file type {kind or '(no extension)'!r}; use .parquet, .csv or .tsv "
            "(optionally .gz)",
            path=path,
        )

    # -- Parquet -------------------------------------------------------------------
    def _open_parquet(self) -> SourceInfo:
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"not a readable Parquet file ({_first_line(exc)})", path=self.path
            ) from None
        schema = pf.schema_arrow
        self._check_column(schema.names, schema)
        if pf.metadata.num_rows == 0:
            raise InputError("has no rows", path=self.path)
        return SourceInfo(
            self.path, "parquet", self.id_column, LANG_COLUMN in schema.names, pf.metadata.num_rows
        )

    def _check_column(self, names: list[str], schema: pa.Schema | None) -> None:
        if self.id_column not in names:
            hint = ""
            if len(names) == 1 and any(d in names[0] for d in ",;\t|"):
                hint = "; the file seems to use another delimiter"
            raise InputError(
                f"no column {self.id_column!r} "
                f"(columns: {', '.join(map(repr, names[:10]))}){hint}; "
                "name the id column with --id-column",
                path=self.path,
            )
        if schema is not None:
            kind = schema.field(self.id_column).type
            if not (
                pa.types.is_integer(kind)
                or pa.types.is_floating(kind)
                or pa.types.is_string(kind)
                or pa.types.is_large_string(kind)
                or pa.types.is_null(kind)
            ):
                raise InputError(
                    f"column {self.id_column!r} has type {kind}; rev_ids must be integers",
                    path=self.path,
                )

    def _parquet_batches(self) -> Iterator[tuple[pa.Array, pa.Array | None]]:
        pf = pq.ParquetFile(self.path)
        columns = [self.id_column] + ([LANG_COLUMN] if self.info.has_lang else [])
        for batch in pf.iter_batches(batch_size=self.batch_rows, columns=columns):
            yield batch.column(0), batch.column(1) if self.info.has_lang else None

    # -- CSV -----------------------------------------------------------------------
    def _open_csv(self) -> SourceInfo:
        names = self._csv_header()
        self._check_column(names, None)
        has_lang = LANG_COLUMN in names
        first = next(self._csv_batches_from(has_lang), None)
        if first is None:
            raise InputError("has a header but no rows", path=self.path)
        return SourceInfo(self.path, "csv", self.id_column, has_lang, None)

    def _csv_header(self) -> list[str]:
        try:
            with pa.input_stream(str(self.path), compression="detect") as stream:
                head = stream.read(1 << 16)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"cannot read it ({_first_line(exc)})", path=self.path) from None
        text = head.decode("utf-8", "replace").lstrip("\ufeff")
        line = text.splitlines()[0] if text.strip() else ""
        names = next(csv.reader(io.StringIO(line), delimiter=self._delimiter), [])
        if not names:
            raise InputError("is empty (no header line)", path=self.path)
        return names

    def _csv_batches_from(self, has_lang: bool) -> Iterator[tuple[pa.Array, pa.Array | None]]:
        columns = [self.id_column] + ([LANG_COLUMN] if has_lang else [])
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
                ),
            )
            for batch in reader:
                if batch.num_rows:
                    yield batch.column(0), batch.column(1) if has_lang else None
        except pa.ArrowException as exc:
            raise InputError(
                f"cannot parse it as CSV ({_first_line(exc)})", path=self.path
            ) from None

    # -- shared --------------------------------------------------------------------
    def batches(self) -> Iterator[list[Item]]:
        """Lists of revisions and invalid rows, in input order."""
        if self.info.format == "parquet":
            arrays = self._parquet_batches()
        else:
            arrays = self._csv_batches_from(self.info.has_lang)
        row = 1
        try:
            for ids, langs in arrays:
                yield self._convert(ids, langs, row)
                row += len(ids)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"unreadable after row {row - 1} ({_first_line(exc)})", path=self.path
            ) from None

    def _convert(self, ids: pa.Array, langs: pa.Array | None, first_row: int) -> list[Item]:
        kind = ids.type
        values = ids.to_pylist()
        lang_values = langs.to_pylist() if langs is not None else None
        default = self.default_lang
        out: list[Item] = []
        append = out.append
        parse = (
            _from_float
            if pa.types.is_floating(kind)
            else _from_text
            if not pa.types.is_integer(kind)
            else _from_int
        )
        for i, value in enumerate(values):
            rev_id, reason = parse(value)
            if reason is not None:
                append(InvalidRow(first_row + i, rev_id, f"{self.id_column} {reason}"))
                continue
            lang = lang_values[i] if lang_values is not None else None
            append(Revision(rev_id, lang.strip().lower() if lang and lang.strip() else default))  # type: ignore[arg-type]
        return out


def _from_int(value: int | None) -> tuple[int | None, str | None]:
    if value is None:
        return None, "is null"
    if value > INT64_MAX:
        return None, f"{value} does not fit in int64"
    if value <= 0:
        return value, f"{value} is not a positive integer"
    return value, None


def _from_float(value: float | None) -> tuple[int | None, str | None]:
    if value is None or value != value:
        return None, "is null"
    if not value.is_integer():
        return None, f"{value!r} is not an integer"
    return _from_int(int(value))


def _from_text(value: str | None) -> tuple[int | None, str | None]:
    if value is None or not value.strip():
        return None, "is null"
    text = value.strip()
    if not _INTEGER_TEXT.fullmatch(text):
        return None, f"{text[:40]!r} is not an integer"
    number = int(text)
    if number < -INT64_MAX - 1:
        return None, f"{text[:40]} does not fit in int64"
    return _from_int(number)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
