"""JSON lines in (one object per line, ``{"rev_id": 123, ...}``), as ORES'
`score_revisions` tool read them; optionally compressed.

The first object names the columns (the id column must be there; a ``lang`` or the
wiki column and ``page_id`` are read when it has them). Values go through the same
checks as CSV text, so ``"123"``, ``123`` and ``123.0`` are one rev_id and anything
else is an invalid row. A line that is not a JSON object is an invalid row too; blank
lines are skipped, and rows are numbered by the objects read. A later line's field the
first line lacks is refused where it would decide the row's key (``lang``, ``wiki_db``,
the wiki column, ``page_id``, ``page_title``), else said once: it is not read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa

from lwbatch.errors import InputError
from lwbatch.io.arrays import array
from lwbatch.io.sources import Arrays, FileSource
from lwbatch.results import InvalidRow
from lwbatch.seams import Item

log = logging.getLogger("lwbatch")
# Field metadata of a kept column whose values are JSON text (read from JSON lines).
JSON_TEXT = b"lwbatch.json"

_CHUNK = 1 << 20
_NOT_AN_OBJECT = object()  # what a line that is not a JSON object reads as
# The id text such a line gets, so that the row checks make it an invalid row; its
# reason is then said plainly.
_NOT_AN_OBJECT_ID = "\x00not a JSON object"


class JsonlSource(FileSource):
    """A JSON-lines file, streamed line by line (never the whole file)."""

    format = "jsonl"

    def _open(self) -> None:
        first = next(self._records(), None)
        if first is None:
            raise InputError("has no JSON lines", path=self.name)
        if not isinstance(first, dict):
            raise InputError(
                'line 1 is not a JSON object; give one object per line, such as {"rev_id": 123}',
                path=self.name,
            )
        self._decide(list(first))
        self._named = frozenset(first)
        # Kept values travel as JSON text, marked so that a JSON output writes them back
        # as the values they were.
        self.kept_fields = [
            pa.field(n, pa.string(), metadata={JSON_TEXT: b"1"}) for n in self.columns.kept
        ]

    def _lines(self) -> Iterator[bytes]:
        try:
            with pa.input_stream(str(self.path), compression="detect") as stream:
                rest = b""
                while chunk := stream.read(_CHUNK):
                    lines = (rest + chunk).split(b"\n")
                    rest = lines.pop()
                    yield from lines
                if rest:
                    yield rest
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"cannot read it ({exc})", path=self.name) from None

    def _records(self) -> Iterator[Any]:
        for line in self._lines():
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                yield _NOT_AN_OBJECT

    def batches(self) -> Iterator[list[Item]]:
        for batch in super().batches():
            yield [_plainly(item) for item in batch]

    def _arrays(self) -> Iterator[Arrays]:
        id_column, wiki_column = self.id_column, self.columns.wiki
        kept_names = [f.name for f in self.kept_fields]
        ids: list[str | None] = []
        wikis: list[str | None] = []
        pages: list[list[str | None]] = [[] for _ in self.page_columns]
        kept: list[list[str | None]] = [[] for _ in kept_names]
        unnamed = _Unnamed(self)
        for number, record in enumerate(self._records(), start=1):
            if isinstance(record, dict) and not record.keys() <= self._named:
                unnamed.check(number, record)
            if not isinstance(record, dict):
                ids.append(_NOT_AN_OBJECT_ID)
                wikis.append(None)
                for column in pages:
                    column.append(None)
                for column in kept:
                    column.append(None)
            else:
                ids.append(_text(record.get(id_column)))
                wikis.append(_text(record.get(wiki_column)) if wiki_column else None)
                for name, column in zip(self.page_columns, pages, strict=True):
                    column.append(_text(record.get(name)))
                for name, column in zip(kept_names, kept, strict=True):
                    column.append(
                        None if name not in record else orjson.dumps(record[name]).decode()
                    )
            if len(ids) >= self.batch_rows:
                yield self._batch(ids, wikis, pages, kept)
                ids, wikis, kept = [], [], [[] for _ in kept_names]
                pages = [[] for _ in self.page_columns]
        if ids:
            yield self._batch(ids, wikis, pages, kept)

    def _batch(
        self,
        ids: list[str | None],
        wikis: list[str | None],
        pages: list[list[str | None]],
        kept: list[list[str | None]],
    ) -> Arrays:
        return (
            array(ids, pa.string()),
            array(wikis, pa.string()) if self.columns.wiki is not None else None,
            [array(column, pa.string()) for column in pages],
            [array(column, pa.string()) for column in kept],
        )


# Fields that decide where a row goes: on a later line only, they would be lost.
_KEYS = frozenset({"lang", "wiki_db", "page_id", "page_title"})


class _Unnamed:
    """Fields of later lines that the first line lacks: refused where they decide a
    row's key, else said once (they are not read)."""

    def __init__(self, source: JsonlSource) -> None:
        self._source = source
        self._said = False

    def check(self, number: int, record: dict[str, Any]) -> None:
        source = self._source
        extra = sorted(set(record) - source._named)
        deciding = [f for f in extra if f in _KEYS or f == source.columns.wiki]
        if deciding:
            raise InputError(
                f"line {number} has a {deciding[0]!r} field the first line lacks: the first "
                f"line names the columns, so put {deciding[0]!r} on it too (null where a "
                "row has none)",
                path=source.name,
            )
        if not self._said:
            self._said = True
            log.warning(
                "%s: line %d has fields the first line lacks (%s); they are not read: the "
                "first line names the columns",
                source.name,
                number,
                ", ".join(map(repr, extra)),
            )


def _plainly(item: Item) -> Item:
    if isinstance(item, InvalidRow) and repr(_NOT_AN_OBJECT_ID)[:10] in item.reason:
        return InvalidRow(item.row, None, "the line is not a JSON object", item.wiki, item.kept)
    return item


def _text(value: Any) -> str | None:
    """A JSON value as the text CSV would have held (checked by the same rules)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return orjson.dumps(value).decode()
    return repr(value)


__all__ = ["JsonlSource"]
