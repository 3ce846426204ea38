"""What a user may name as input: one file, several, a directory of Parquet files, a
glob, or ``-`` (standard input, spooled to a temporary file first so that it can be
read twice, fingerprinted and resumed like a file).

Several files are one input: rows are numbered across them in the order given (a
directory's and a glob's files sorted by name), and they must agree on their key
columns.
"""

from __future__ import annotations

import glob
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from lwbatch.engine.targets import warn_if_models_disagree
from lwbatch.errors import InputError, UsageError
from lwbatch.io.jsonl_source import JsonlSource
from lwbatch.io.sources import DEFAULT_BATCH_ROWS, CsvSource, FileSource, ParquetSource, check_file
from lwbatch.keys import KeyLayout
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import InvalidRow
from lwbatch.seams import Item, Source
from lwbatch.settings import INPUT_FORMATS

STDIN = "-"
_GLOB = set("*?[")
_PARQUET = (".parquet", ".pq")
_CSV = {".csv": ",", ".tsv": "\t"}
_JSONL = (".jsonl", ".ndjson")
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")


class ManySource:
    """Several input files read one after another as one :class:`~lwbatch.seams.Source`."""

    def __init__(self, sources: Sequence[FileSource]) -> None:
        self.sources = list(sources)
        first = self.sources[0]
        for other in self.sources[1:]:
            if other.key_layout != first.key_layout:
                raise InputError(
                    f"its wiki column is {_said(other.key_layout)} but {first.name}'s is "
                    f"{_said(first.key_layout)}; give inputs with the same columns",
                    path=other.name,
                )
            if other.kept_fields != first.kept_fields:
                raise InputError(
                    f"the columns kept ({_fields(other)}) differ from {first.name}'s "
                    f"({_fields(first)}); give inputs with the same columns",
                    path=other.name,
                )
        # The page columns every input has (a row can only be read by those).
        self.page_columns = tuple(
            c for c in first.page_columns if all(c in s.page_columns for s in self.sources)
        )
        self.kept_fields = first.kept_fields

    @property
    def name(self) -> str:
        return f"{self.sources[0].name} (+{len(self.sources) - 1} more)"

    @property
    def total_rows(self) -> int | None:
        counts = [s.total_rows for s in self.sources]
        return None if None in counts else sum(c for c in counts if c is not None)

    @property
    def key_layout(self) -> KeyLayout:
        return self.sources[0].key_layout

    def fingerprint(self) -> dict[str, Any]:
        return {"files": [s.fingerprint() for s in self.sources]}

    def batches(self) -> Iterator[list[Item]]:
        offset = 0
        for source in self.sources:
            rows = 0
            for batch in source.batches():
                rows += len(batch)
                yield [_renumbered(item, offset, source.name) for item in batch]
            offset += rows

    def __repr__(self) -> str:
        return f"<ManySource {len(self.sources)} files>"


def _renumbered(item: Item, offset: int, name: str) -> Item:
    if not isinstance(item, InvalidRow) or item.row is None:
        return item
    return InvalidRow(
        item.row + offset,
        item.rev_id,
        f"{item.reason} ({name}, row {item.row})",
        item.wiki,
        item.kept,
    )


def _fields(source: FileSource) -> str:
    return ", ".join(f"{f.name} {f.type}" for f in source.kept_fields) or "none"


def _said(layout: KeyLayout) -> str:
    return repr(layout.wiki_column) if layout.wiki_column else "absent"


def expand(inputs: Sequence[Path | str]) -> list[Path | str]:
    """Each directory -> its Parquet files, each glob -> its matches (sorted); ``-``
    and plain paths stay as they are."""
    out: list[Path | str] = []
    for given in inputs:
        text = str(given)
        path = Path(text)
        if text == STDIN:
            out.append(STDIN)
        elif path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in (".parquet", ".pq")
                and not p.name.startswith((".", "_"))  # Spark's _SUCCESS, hidden files
                and p.is_file()
            )
            if not found:
                raise InputError("is a directory without Parquet files", path=text)
            out.extend(found)
        elif not path.exists() and _GLOB & set(text):
            matches = sorted(Path(m) for m in glob.glob(text) if Path(m).is_file())
            if not matches:
                raise InputError("no file matches this pattern", path=text)
            out.extend(matches)
        else:
            out.append(path)
    return out


def spool(stream: BinaryIO, directory: Path) -> Path:
    """Copy `stream` (standard input) to a file in `directory`; its path."""
    path = directory / "stdin"
    with path.open("wb") as fh:
        shutil.copyfileobj(stream, fh, 1 << 20)
    return path


def sniff(path: Path) -> str:
    """The format of spooled standard input: Parquet by its magic bytes, JSON lines when
    the first character is ``{``, else CSV."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    return "jsonl" if head.lstrip().startswith(b"{") else "csv"


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
    check_file(path, label)  # a missing file is reported as such, whatever its name
    raise InputError(
        f"unknown file type {kind or '(no extension)'!r}; use .parquet, .csv, .tsv or "
        ".jsonl (optionally .gz), or give `input_format`",
        path=label if label is not None else path,
    )


def open_inputs(
    inputs: Sequence[Path | str],
    *,
    id_column: str = "rev_id",
    lang: str = "en",
    wiki_column: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    input_format: str | None = None,
    stdin: BinaryIO | None = None,
    spool_dir: Path | None = None,
    keep_columns: Sequence[str] | str | None = None,
) -> FileSource | ManySource:
    """One source for every input named; ``-`` reads `stdin` (spooled into
    `spool_dir`). `input_format` (parquet, csv, tsv, jsonl) overrides the file names."""
    if input_format is not None and input_format not in INPUT_FORMATS:
        raise UsageError(f"`input_format` {input_format!r}: give one of {', '.join(INPUT_FORMATS)}")
    paths = expand(inputs)
    if not paths:
        raise UsageError("give at least one input")
    if paths.count(STDIN) > 1:
        raise UsageError("`input` names standard input (-) more than once")
    options: dict[str, Any] = {
        "id_column": id_column,
        "lang": lang,
        "wiki_column": wiki_column,
        "batch_rows": batch_rows,
        "keep_columns": keep_columns,
    }
    sources = []
    for path in paths:
        if path == STDIN:
            if stdin is None or spool_dir is None:
                raise UsageError("`input` '-' (standard input) is for the command line")
            spooled = spool(stdin, spool_dir)
            if spooled.stat().st_size == 0:
                raise InputError("standard input is empty", path=STDIN)
            kind = input_format or sniff(spooled)
            sources.append(open_source(spooled, format=kind, label=STDIN, **options))
        else:
            sources.append(open_source(path, format=input_format, **options))
    return sources[0] if len(sources) == 1 else ManySource(sources)


def open_for(
    input: Path | str | Sequence[Path | str] | Source,
    specs: Sequence[ModelSpec],
    *,
    id_column: str,
    lang: str,
    wiki_column: str | None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    keep_columns: Sequence[str] | str | None = None,
    input_format: str | None = None,
) -> Source:
    """The source of `input`, checked against the models it is for (as `score` and
    `plan` both need it)."""
    if isinstance(input, Source) and keep_columns is not None:
        raise UsageError(
            "`keep_columns` is for inputs given as paths: a Source object chooses its own "
            "kept columns (FileSource's `keep_columns`)"
        )
    source = (
        input
        if isinstance(input, Source)
        else open_inputs(
            [input] if isinstance(input, Path | str) else input,
            id_column=id_column,
            lang=lang,
            wiki_column=wiki_column,
            batch_rows=batch_rows,
            keep_columns=keep_columns,
            input_format=input_format,
        )
    )
    taken = {"rev_id", source.key_layout.wiki_column, *(s.name for s in specs)}
    for field in getattr(source, "kept_fields", ()):
        if field.name in taken:
            raise UsageError(
                f"`keep_columns` {field.name!r}: the output has a column of that name "
                "already (a key or a model); rename it in the input"
            )
    pages = getattr(source, "page_columns", None)  # None: a Source that does not say
    if pages is not None and not pages:
        for spec in specs:
            if spec.needs_page:
                raise InputError(
                    f"{spec.name} needs a page_id or page_title column beside the rev_id "
                    "(its server takes the page with the revision)",
                    path=source.name,
                )
    if source.key_layout.wiki_column is None:
        warn_if_models_disagree(specs, lang, source.name)
    return source


__all__ = [
    "STDIN",
    "ManySource",
    "expand",
    "open_for",
    "open_inputs",
    "open_source",
    "sniff",
    "spool",
]
