"""Input rows -> revisions and invalid rows: the rules every input shares.

A rev_id that is null, not an integer or <= 0, or a wiki value that names no wiki, makes
an :class:`InvalidRow` (reported and written, never silently dropped). Integral floats
(``12.0``, what pandas writes for an id column with nulls) are rev_ids; so is text that
spells one. A row's page is its page_id where it has one, else its title.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from lwbatch.io.columns import PAGE_ID_COLUMN, Columns
from lwbatch.results import InvalidRow, Revision
from lwbatch.seams import Item
from lwbatch.wikis import Wiki, WikiValueError, wikis

INT64_MAX = 2**63 - 1
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
# pandas writes an integer column with nulls as floats: "12.0" in a CSV.
_INTEGRAL_FLOAT_TEXT = re.compile(r"([+-]?[0-9]+)\.0*")


class RowReader:
    """Arrow columns of ids, wikis and pages -> revisions and invalid rows, as the
    input's :class:`~lwbatch.io.columns.Columns` say: the wiki column names wikis by
    language code (an empty cell takes the input's `lang`) or by database name. What a
    Source, a table and a Spark task share."""

    def __init__(self, columns: Columns, default_wiki: Wiki) -> None:
        self.id_column = columns.id_column
        self._page_columns = columns.pages
        self.default_wiki = default_wiki
        self._wiki_source = columns.wiki
        self._wiki_form = columns.wiki_form
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
        kept_rows = list(zip(*(_values(k) for k in kept), strict=True)) if kept else None
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


__all__ = ["INT64_MAX", "RowReader"]


def _values(column: pa.Array) -> list[Any]:
    """A kept column's values. Nanosecond times stay integers: as Python objects they
    would be pandas Timestamps (pyarrow imports pandas for them) and lose precision on
    the way back; lwbatch/io/arrays.py takes the integers as they are."""
    kind = column.type
    if (
        pa.types.is_timestamp(kind) or pa.types.is_duration(kind) or pa.types.is_time64(kind)
    ) and kind.unit == "ns":
        column = column.view(pa.int64())  # cast would import pyarrow.compute
    values: list[Any] = column.to_pylist()
    return values
