"""Input files -> batches of revisions, streamed with pyarrow (never the whole file).

Rows whose rev_id is null, not an integer or <= 0, or whose wiki names no wiki, come
out as :class:`InvalidRow` so they are reported and written, never silently dropped.

A row's wiki comes from a ``lang`` column (Wikipedia language codes; an empty cell
takes the source's `lang`) or from `wiki_column` (database names such as ``enwiki``,
as Wikimedia's data lake writes them); either makes the key (wiki, rev_id). An
optional ``page_id`` column is read for the models that need it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lwbatch.errors import InputError, UsageError
from lwbatch.keys import KeyLayout
from lwbatch.results import InvalidRow, Revision
from lwbatch.seams import Item
from lwbatch.wikis import Wiki, WikiValueError, wikipedia, wikis

INT64_MAX = 2**63 - 1
DEFAULT_BATCH_ROWS = 65_536
LANG_COLUMN = "lang"
PAGE_ID_COLUMN = "page_id"
# outlink-topic-model takes the page by id or by title: rows give one or the other.
PAGE_TITLE_COLUMN = "page_title"
PAGE_COLUMNS = (PAGE_ID_COLUMN, PAGE_TITLE_COLUMN)
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
# pandas writes an integer column with nulls as floats: "12.0" in a CSV.
_INTEGRAL_FLOAT_TEXT = re.compile(r"([+-]?[0-9]+)\.0*")
_PARQUET = (".parquet", ".pq")
_CSV = {".csv": ",", ".tsv": "\t"}
_JSONL = (".jsonl", ".ndjson")
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
_FINGERPRINT_BYTES = 1 << 20
KEEP_ALL = "all"
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
        if wiki_column is not None and wiki_column in (id_column, "rev_id"):
            raise UsageError(
                f"`wiki_column` {wiki_column!r} is the name of the id column; "
                "give the column that holds each row's wiki"
            )
        self.wiki_column = wiki_column
        self.batch_rows = batch_rows
        # The column that names each row's wiki, and how: "lang" or "dbname".
        self._wiki_source: str | None = None
        self._wiki_form = "dbname" if wiki_column is not None else "lang"
        # The columns naming each row's page: page_id and/or page_title, in that order.
        self.page_columns: tuple[str, ...] = ()
        self._total_rows: int | None = None
        _check_file(self.path, self.name)
        self._open()

    @property
    def key_layout(self) -> KeyLayout:
        return KeyLayout(self._wiki_source)

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

    def _columns(self) -> list[str]:
        """The columns read, in the order _arrays yields them (each once)."""
        columns = [
            self.id_column,
            *([self._wiki_source] if self._wiki_source is not None else []),
            *self.page_columns,
        ]
        return columns + [f.name for f in self.kept_fields if f.name not in columns]

    def _kept_names(self, names: list[str]) -> list[str]:
        """The input columns `keep_columns` names, checked against the file's."""
        keys = {self.id_column, self._wiki_source}
        if self.keep_columns is None:
            return []
        if self.keep_columns == KEEP_ALL:
            return [n for n in names if n not in keys]
        wanted = [self.keep_columns] if isinstance(self.keep_columns, str) else self.keep_columns
        for name in wanted:
            if name in keys:
                raise UsageError(
                    f"`keep_columns` {name!r} is a key column: the output has it already"
                )
            if name not in names:
                raise InputError(
                    f"no column {name!r} for `keep_columns` "
                    f"(columns: {', '.join(map(repr, names[:10]))})",
                    path=self.name,
                )
        return list(dict.fromkeys(wanted))

    def _split(self, batch: pa.RecordBatch) -> Arrays:
        """A batch read with :meth:`_columns` -> what :meth:`_arrays` yields."""
        # By name: a reader may give the columns in the file's order, not the one asked.
        wikis_ = batch.column(self._wiki_source) if self._wiki_source is not None else None
        pages = [batch.column(name) for name in self.page_columns]
        kept = [batch.column(f.name) for f in self.kept_fields]
        return batch.column(self.id_column), wikis_, pages, kept

    def _find_columns(self, names: list[str]) -> None:
        if self.wiki_column is not None:
            if self.wiki_column not in names:
                raise InputError(
                    f"no column {self.wiki_column!r} for `wiki_column` "
                    f"(columns: {', '.join(map(repr, names[:10]))})",
                    path=self.name,
                )
            self._wiki_source = self.wiki_column
        elif LANG_COLUMN in names:
            self._wiki_source = LANG_COLUMN
        self.page_columns = page_columns_of(names, self.id_column)

    def _check_column(self, names: list[str], schema: pa.Schema | None) -> None:
        if self.id_column not in names:
            hint = ""
            if len(names) == 1 and any(d in names[0] for d in ",;\t|"):
                hint = "; the file seems to use another delimiter"
            raise InputError(
                f"no column {self.id_column!r} "
                f"(columns: {', '.join(map(repr, names[:10]))}){hint}; "
                "name the id column with `id_column`",
                path=self.name,
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
                    path=self.name,
                )

    def batches(self) -> Iterator[list[Item]]:
        """Lists of revisions and invalid rows, in input order."""
        reader = RowReader(
            id_column=self.id_column,
            default_wiki=self.default_wiki,
            wiki_column=self._wiki_source,
            wiki_form=self._wiki_form,
            page_columns=self.page_columns,
        )
        row = 1
        try:
            for ids, wiki_values, pages, kept in self._arrays():
                yield reader.convert(ids, wiki_values, pages, row, kept)
                row += len(ids)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"unreadable after row {row - 1} ({_first_line(exc)})", path=self.name
            ) from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"


class RowReader:
    """Arrow columns of ids, wikis and page ids -> revisions and invalid rows.

    `wiki_column` names the column the wikis come from (None: no wiki column) and
    `wiki_form` how it names them: "lang" (language codes; an empty cell takes `lang`)
    or "dbname" (database names). What a Source and a Spark task share.
    """

    def __init__(
        self,
        *,
        id_column: str,
        default_wiki: Wiki,
        wiki_column: str | None = None,
        wiki_form: str = "lang",
        page_columns: Sequence[str] = (),
    ) -> None:
        self.id_column = id_column
        self._page_columns = tuple(page_columns)
        self.default_wiki = default_wiki
        self._wiki_source = wiki_column
        self._wiki_form = wiki_form
        # Each distinct wiki value is parsed once: (wiki, key value) or the reason.
        self._wiki_cache: dict[str, tuple[Wiki, str] | str] = {}

    def convert(
        self,
        ids: pa.Array,
        wiki_values: pa.Array | None,
        pages: Sequence[pa.Array],
        first: int | None,
        kept: Sequence[pa.Array] = (),
    ) -> list[Item]:
        """Items for one batch of rows; `first` is the first row's number in the input
        (None where positions mean nothing to the user: a Spark partition's rows).
        `kept`: the columns carried to the output, in order."""
        kind = ids.type
        values = ids.to_pylist()
        kept_rows = list(zip(*(k.to_pylist() for k in kept), strict=True)) if kept else None
        wiki_list = wiki_values.to_pylist() if wiki_values is not None else None
        # A row's page by id, else by title (a data-lake export may hold both, with
        # some ids missing).
        page_ids: list[int | None] | None = None
        titles: list[str | None] | None = None
        for name, array in zip(self._page_columns, pages, strict=True):
            if name == PAGE_ID_COLUMN:
                page_ids = _page_ids(array)
            else:
                titles = _page_titles(array)
        out: list[Item] = []
        append = out.append
        parse = (
            _from_float
            if pa.types.is_floating(kind)
            else _from_text
            if not pa.types.is_integer(kind)
            else _from_int
        )
        default = self.default_wiki
        for i, value in enumerate(values):
            rev_id, reason = parse(value)
            raw_wiki = wiki_list[i] if wiki_list is not None else None
            carried = kept_rows[i] if kept_rows is not None else ()
            if reason is not None:
                where = None if first is None else first + i
                append(InvalidRow(where, rev_id, f"{self.id_column} {reason}", raw_wiki, carried))
                continue
            page_id = page_ids[i] if page_ids is not None else None
            title = titles[i] if titles is not None and page_id is None else None
            if wiki_list is None:
                append(Revision(rev_id, default, "", page_id, carried, title))  # type: ignore[arg-type]
                continue
            found = self._wiki(raw_wiki)
            if isinstance(found, str):
                where = None if first is None else first + i
                append(InvalidRow(where, rev_id, found, raw_wiki, carried))
            else:
                append(Revision(rev_id, found[0], found[1], page_id, carried, title))  # type: ignore[arg-type]
        return out

    def _wiki(self, value: object) -> tuple[Wiki, str] | str:
        """A wiki cell -> (wiki, the key's value), or why the row cannot be sent."""
        text = value if isinstance(value, str) else "" if value is None else str(value)
        found = self._wiki_cache.get(text)
        if found is None:
            found = self._parse_wiki(text)
            if len(self._wiki_cache) < 100_000:  # far more than there are wikis
                self._wiki_cache[text] = found
        return found

    def _parse_wiki(self, text: str) -> tuple[Wiki, str] | str:
        column = self._wiki_source
        table = wikis()
        try:
            if self._wiki_form == "dbname":
                if not text.strip():
                    return f"{column} is empty: each row needs its wiki's database name"
                wiki = table.from_dbname(text)
                return wiki, wiki.dbname
            # An empty language cell takes the source's `lang`, as rows without a column do.
            wiki = table.from_lang(text) if text.strip() else self.default_wiki
            return wiki, wiki.lang
        except WikiValueError as exc:
            return f"{column} {exc}"


class ParquetSource(FileSource):
    """A Parquet file, read one record batch at a time (never the whole file)."""

    format = "parquet"

    def _open(self) -> None:
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"not a readable Parquet file ({_first_line(exc)})", path=self.name
            ) from None
        schema = pf.schema_arrow
        self._check_column(schema.names, schema)
        self._find_columns(schema.names)
        if self._wiki_source is not None and not _is_text(schema.field(self._wiki_source).type):
            raise InputError(
                f"column {self._wiki_source!r} has type {schema.field(self._wiki_source).type}; "
                "wikis must be text",
                path=self.name,
            )
        if pf.metadata.num_rows == 0:
            raise InputError("has no rows", path=self.name)
        self._total_rows = pf.metadata.num_rows
        self.kept_fields = [_plain(schema.field(name)) for name in self._kept_names(schema.names)]

    def _arrays(self) -> Iterator[Arrays]:
        pf = pq.ParquetFile(self.path)
        columns = self._columns()
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
        self._check_column(names, None)
        self._find_columns(names)
        self.kept_fields = [pa.field(n, pa.string()) for n in self._kept_names(names)]
        if next(self._arrays(), None) is None:
            raise InputError("has a header but no rows", path=self.name)

    def _header(self) -> list[str]:
        try:
            with pa.input_stream(str(self.path), compression="detect") as stream:
                head = stream.read(1 << 16)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"cannot read it ({_first_line(exc)})", path=self.name) from None
        text = head.decode("utf-8", "replace").lstrip("\ufeff")
        line = text.splitlines()[0] if text.strip() else ""
        names = next(csv.reader(io.StringIO(line), delimiter=self._delimiter), [])
        if not names:
            raise InputError("is empty (no header line)", path=self.name)
        return names

    def _arrays(self) -> Iterator[Arrays]:
        columns = self._columns()
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
                f"cannot parse it as CSV ({_first_line(exc)})", path=self.name
            ) from None


def open_source(
    path: Path | str,
    *,
    id_column: str = "rev_id",
    lang: str = "en",
    wiki_column: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    format: str | None = None,
    label: str | None = None,
    keep_columns: Sequence[str] | str | None = None,
) -> FileSource:
    """The source for `path`, in `format` (parquet, csv, tsv, jsonl) or else chosen by
    its extension; raises InputError if unusable. `label` names it in messages."""
    from lwbatch.io.jsonl_source import JsonlSource

    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    kind = f".{format}" if format is not None else suffixes[-1] if suffixes else ""
    options: dict[str, Any] = {
        "id_column": id_column,
        "lang": lang,
        "wiki_column": wiki_column,
        "batch_rows": batch_rows,
        "label": label,
        "keep_columns": keep_columns,
    }
    if kind in _PARQUET:
        return ParquetSource(path, **options)
    if kind in _CSV:
        return CsvSource(path, delimiter=_CSV[kind], **options)
    if kind in _JSONL:
        return JsonlSource(path, **options)
    _check_file(path, label)  # a missing file is reported as such, whatever its name
    raise InputError(
        f"unknown file type {kind or '(no extension)'!r}; use .parquet, .csv, .tsv or "
        ".jsonl (optionally .gz), or give `input_format`",
        path=label if label is not None else path,
    )


def _plain(field: pa.Field) -> pa.Field:
    """A kept column's field as the output holds it: dictionary-encoded text decoded."""
    if pa.types.is_dictionary(field.type):
        return pa.field(field.name, field.type.value_type)
    return pa.field(field.name, field.type)


def _is_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_dictionary(kind)
        or pa.types.is_null(kind)
    )


def page_columns_of(names: Sequence[str], id_column: str) -> tuple[str, ...]:
    """The columns that name each row's page (page_id, page_title), those there are."""
    return tuple(c for c in PAGE_COLUMNS if c in names and c != id_column)


def _page_titles(array: pa.Array) -> list[str | None]:
    # A title is text; an empty one is absent, as a missing page_id is.
    out: list[str | None] = []
    for value in array.to_pylist():
        text = value.strip() if isinstance(value, str) else None if value is None else str(value)
        out.append(text or None)
    return out


def _page_ids(array: pa.Array) -> list[int | None]:
    # A page_id only travels with the revision: one that is not a positive integer is
    # absent, and the models that need it answer that row with an error.
    out: list[int | None] = []
    kind = array.type
    parse = (
        _from_float
        if pa.types.is_floating(kind)
        else _from_int
        if pa.types.is_integer(kind)
        else _from_text
    )
    for value in array.to_pylist():
        try:
            page_id, reason = parse(value)
        except (TypeError, AttributeError):
            page_id, reason = None, "not a number"
        out.append(page_id if reason is None else None)
    return out


def _check_file(path: Path, name: str | None = None) -> None:
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
    if (integral := _INTEGRAL_FLOAT_TEXT.fullmatch(text)) is not None:
        number = int(integral.group(1))
    elif _INTEGER_TEXT.fullmatch(text):
        number = int(text)
    else:
        return None, f"{text[:40]!r} is not an integer"
    if number < -INT64_MAX - 1:
        return None, f"{text[:40]} does not fit in int64"
    return _from_int(number)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
