"""What identifies an output row: the row key, its columns, and a compact set of keys.

Today a key is the rev_id alone; rev_ids are unique per wiki only, so the key grows
a wiki next. That change belongs here and in the places that build keys (sources,
the journal's answer lines), not in the engine, which only hashes and compares them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import pyarrow as pa
from pyroaring import BitMap64


class RowKey(NamedTuple):
    """One output row's key."""

    rev_id: int


# The output's key columns, in order, as Arrow fields.
KEY_FIELDS: tuple[pa.Field, ...] = (pa.field("rev_id", pa.int64()),)


def key_to_json(key: RowKey) -> list[Any]:
    return list(key)


def key_from_json(values: Any) -> RowKey:
    """The key of a journal line; raises ValueError or TypeError for a foreign one."""
    if isinstance(values, int) and not isinstance(values, bool):
        return RowKey(values)
    (rev_id,) = values
    if not isinstance(rev_id, int) or isinstance(rev_id, bool):
        raise TypeError(f"not a rev_id: {rev_id!r}")
    return RowKey(rev_id)


def keys_of(table: pa.Table) -> Iterable[RowKey]:
    """The keys of a table in the merged layout (key columns first)."""
    return map(RowKey, table.column("rev_id").to_pylist())


class KeySet:
    """A set of keys in ~2 bytes each (a compressed bitmap of rev_ids), not ~70 in a set."""

    __slots__ = ("_bits",)

    def __init__(self, keys: Iterable[RowKey] = ()) -> None:
        self._bits = BitMap64(key.rev_id for key in keys)

    def add(self, key: RowKey) -> None:
        self._bits.add(key.rev_id)

    def update(self, keys: Iterable[RowKey]) -> None:
        self._bits.update(key.rev_id for key in keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, RowKey) and key.rev_id in self._bits

    def __len__(self) -> int:
        return len(self._bits)
