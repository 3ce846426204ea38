"""What identifies an output row: the row key, the key columns, and a compact key set.

rev_ids are unique per wiki only, so a key is (wiki, rev_id). `wiki` is the value of
the input's wiki column as the output writes it (a language code such as ``en`` for a
``lang`` column, a database name such as ``zh_yuewiki`` for a column of database
names), or ``""`` when the input has no wiki column: then every row is of one wiki and
the output has the `rev_id` column alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pyarrow as pa
from pyroaring import BitMap64


class RowKey(NamedTuple):
    """One output row's key."""

    wiki: str
    rev_id: int


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """The output's key columns: `wiki_column` (if the input has one), then rev_id."""

    wiki_column: str | None = None

    @property
    def fields(self) -> tuple[pa.Field, ...]:
        rev_id = pa.field("rev_id", pa.int64())
        if self.wiki_column is None:
            return (rev_id,)
        return (pa.field(self.wiki_column, pa.string()), rev_id)

    def keys_of(self, table: pa.Table) -> Iterator[RowKey]:
        """The keys of a table in the merged layout."""
        rev_ids = table.column("rev_id").to_pylist()
        if self.wiki_column is None:
            return (RowKey("", rev_id) for rev_id in rev_ids)
        wikis = table.column(self.wiki_column).to_pylist()
        return (RowKey(w, r) for w, r in zip(wikis, rev_ids, strict=True))


def key_to_json(key: RowKey) -> list[Any]:
    return [key.rev_id] if not key.wiki else [key.wiki, key.rev_id]


def key_from_json(values: Any) -> RowKey:
    """The key of a journal line; raises ValueError or TypeError for a foreign one."""
    if isinstance(values, int) and not isinstance(values, bool):
        return RowKey("", values)
    if len(values) == 1:
        wiki, (rev_id,) = "", values
    else:
        wiki, rev_id = values
    if not isinstance(rev_id, int) or isinstance(rev_id, bool):
        raise TypeError(f"not a rev_id: {rev_id!r}")
    if not isinstance(wiki, str):
        raise TypeError(f"not a wiki: {wiki!r}")
    return RowKey(wiki, rev_id)


class KeySet:
    """A set of keys in ~2 bytes each: a compressed bitmap of rev_ids per wiki."""

    __slots__ = ("_bits",)

    def __init__(self, keys: Iterable[RowKey] = ()) -> None:
        self._bits: dict[str, BitMap64] = {}
        self.update(keys)

    def add(self, key: RowKey) -> None:
        bits = self._bits.get(key.wiki)
        if bits is None:
            bits = self._bits[key.wiki] = BitMap64()
        bits.add(key.rev_id)

    def update(self, keys: Iterable[RowKey]) -> None:
        for key in keys:
            self.add(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, RowKey):
            return False
        bits = self._bits.get(key.wiki)
        return bits is not None and key.rev_id in bits

    def __len__(self) -> int:
        return sum(len(bits) for bits in self._bits.values())

    def __bool__(self) -> bool:
        return bool(self._bits)  # a wiki's bitmap is made by its first key
