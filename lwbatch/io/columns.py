"""The key columns of an input, decided once, for files, Arrow tables and Spark DataFrames
alike: the id column; the column that names each row's wiki, and how (language codes
or database names); the columns naming each row's page; the columns carried to the
output.

Detected without being named: a ``lang`` column of language codes, and a ``wiki_db``
column of database names (Wikimedia's data lake writes one beside ``revision_id``);
an input with both must say which keys its rows (`wiki_column`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from lwbatch.errors import InputError, UsageError
from lwbatch.keys import KeyLayout
from lwbatch.settings import KEEP_ALL

log = logging.getLogger("lwbatch")

LANG_COLUMN = "lang"
LAKE_WIKI_COLUMN = "wiki_db"
PAGE_ID_COLUMN = "page_id"
# outlink-topic-model takes the page by id or by title: rows give one or the other.
PAGE_TITLE_COLUMN = "page_title"
PAGE_COLUMNS = (PAGE_ID_COLUMN, PAGE_TITLE_COLUMN)
WikiForm = Literal["lang", "dbname"]


@dataclass(frozen=True, slots=True)
class Columns:
    """Which columns of an input key its rows, and which the output carries."""

    id_column: str
    wiki: str | None  # the column naming each row's wiki, if any
    wiki_form: WikiForm  # how it names them: language codes or database names
    pages: tuple[str, ...]  # page_id and/or page_title, in that order
    kept: tuple[str, ...]  # carried to the output beside the key

    @property
    def layout(self) -> KeyLayout:
        return KeyLayout(self.wiki)

    def read(self) -> list[str]:
        """The columns read, in order, each once."""
        keys = [self.id_column, *([self.wiki] if self.wiki is not None else []), *self.pages]
        return keys + [name for name in self.kept if name not in keys]

    @classmethod
    def decide(
        cls,
        names: Sequence[str],
        *,
        id_column: str,
        wiki_column: str | None,
        keep_columns: Sequence[str] | str | None,
        where: str,
    ) -> Columns:
        """The columns of an input whose column names are `names` (`where` names the
        input in errors)."""
        listed = f"(columns: {', '.join(map(repr, list(names)[:10]))})"
        if id_column not in names:
            hint = ""
            if len(names) == 1 and any(d in names[0] for d in ",;\t|"):
                hint = "; the file seems to use another delimiter"
            raise InputError(
                f"no column {id_column!r} {listed}{hint}; name the id column with `id_column`",
                path=where,
            )
        wiki, form = _wiki(names, id_column, wiki_column, listed, where)
        pages = tuple(c for c in PAGE_COLUMNS if c in names and c != id_column)
        return cls(
            id_column, wiki, form, pages, _kept(names, {id_column, wiki}, keep_columns, where)
        )


def _wiki(
    names: Sequence[str], id_column: str, wiki_column: str | None, listed: str, where: str
) -> tuple[str | None, WikiForm]:
    if wiki_column is not None:
        if wiki_column in (id_column, "rev_id"):
            raise UsageError(
                f"`wiki_column` {wiki_column!r} is the name of the id column; "
                "give the column that holds each row's wiki"
            )
        if wiki_column not in names:
            raise InputError(f"no column {wiki_column!r} for `wiki_column` {listed}", path=where)
        return wiki_column, "dbname"
    lake = LAKE_WIKI_COLUMN in names and id_column != LAKE_WIKI_COLUMN
    if lake and LANG_COLUMN in names:
        raise InputError(
            f"has both a {LANG_COLUMN!r} and a {LAKE_WIKI_COLUMN!r} column: say which names "
            f"each row's wiki (`wiki_column` {LAKE_WIKI_COLUMN!r} for database names; without "
            f"it a {LANG_COLUMN!r} column alone is read as language codes)",
            path=where,
        )
    if lake:
        log.info(
            "%s: rows are keyed by their %s column of wiki database names (and rev_id)",
            where,
            LAKE_WIKI_COLUMN,
        )
        return LAKE_WIKI_COLUMN, "dbname"
    if LANG_COLUMN in names and id_column != LANG_COLUMN:
        return LANG_COLUMN, "lang"
    return None, "lang"


def _kept(
    names: Sequence[str],
    keys: set[str | None],
    keep_columns: Sequence[str] | str | None,
    where: str,
) -> tuple[str, ...]:
    """The input columns `keep_columns` names, checked against the input's."""
    if keep_columns is None:
        return ()
    if keep_columns == KEEP_ALL:
        return tuple(n for n in names if n not in keys)
    wanted = [keep_columns] if isinstance(keep_columns, str) else list(keep_columns)
    for name in wanted:
        if name in keys:
            raise UsageError(f"`keep_columns` {name!r} is a key column: the output has it already")
        if name not in names:
            raise InputError(
                f"no column {name!r} for `keep_columns` "
                f"(columns: {', '.join(map(repr, list(names)[:10]))})",
                path=where,
            )
    return tuple(dict.fromkeys(wanted))


def check_types(columns: Columns, schema: pa.Schema, where: str) -> None:
    """An id column of numbers or text, a wiki column of text."""
    kind = schema.field(columns.id_column).type
    if not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or is_text(kind)
        or pa.types.is_null(kind)
    ):
        raise InputError(
            f"column {columns.id_column!r} has type {kind}; rev_ids must be integers", path=where
        )
    if columns.wiki is not None and not is_text(schema.field(columns.wiki).type):
        raise InputError(
            f"column {columns.wiki!r} has type {schema.field(columns.wiki).type}; "
            "wikis must be text",
            path=where,
        )


def is_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_dictionary(kind)
        or pa.types.is_null(kind)
    )


__all__ = [
    "LAKE_WIKI_COLUMN",
    "LANG_COLUMN",
    "PAGE_COLUMNS",
    "PAGE_ID_COLUMN",
    "PAGE_TITLE_COLUMN",
    "Columns",
    "check_types",
    "is_text",
]
