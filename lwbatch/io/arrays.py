"""Arrow arrays from Python values, without pyarrow importing pandas.

``pa.array()`` asks pandas whether its argument is one of pandas' arrays, and so
imports pandas wherever it is installed, for every list it converts: 100+ MB of a
scoring run's memory that nothing uses. Here primitive values go through nanoarrow's
builders and the Arrow C data interface, and nested, temporal and dictionary types are
assembled from those with pyarrow's ``from_arrays``/``view``/``cast``; a type none of
these reach (decimals, unions, ...) is left to ``pa.array``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import nanoarrow as na
import pyarrow as pa

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def array(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    """`values` (None for null) as an Arrow array of type `kind`."""
    if pa.types.is_struct(kind):
        return _struct(values, kind)
    if pa.types.is_map(kind):
        return _map(values, kind)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _list(values, kind)
    if pa.types.is_dictionary(kind):
        return array(values, kind.value_type).cast(kind)
    if pa.types.is_null(kind):
        return pa.nulls(len(values))
    temporal = _as_integers(kind)
    if temporal is not None:
        width, convert = temporal
        # Integers are the storage values already (kept nanosecond columns).
        ints = [None if v is None else v if isinstance(v, int) else convert(v) for v in values]
        return _primitive(ints, width).view(kind)
    if _nanoarrow_builds(kind):
        return _primitive(values, kind)
    return pa.array(values, kind)


def _nanoarrow_builds(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    )


def _primitive(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    return pa.array(na.c_array(values, na.c_schema(kind)))


def _masked(built: pa.Array, values: Sequence[Any]) -> pa.Array:
    """`built` (a struct, list or map array) with null where `values` has None. The
    validity bitmap is given directly: pyarrow inverts a ``mask=`` with pyarrow.compute,
    ~9 MB of memory to import."""
    present = [v is not None for v in values]
    nulls = present.count(False)
    if not nulls:
        return built
    kind = built.type
    assert built.offset == 0, "the buffers are taken as they are: a fresh array only"
    validity = _primitive(present, pa.bool_()).buffers()[1]
    if pa.types.is_struct(kind):
        own, children = [validity], [built.field(i) for i in range(kind.num_fields)]
        if not children:  # no field to give the struct its length
            return pa.StructArray.from_buffers(
                kind, len(values), own, null_count=nulls, children=[]
            )
    else:  # list, large list, map: their offsets, then their items
        own, children = [validity, built.buffers()[1]], [built.values]
    return pa.Array.from_buffers(kind, len(built), own, null_count=nulls, children=children)


def _struct(values: Sequence[Any], kind: pa.StructType) -> pa.Array:
    fields = list(kind)
    children = [
        array([None if v is None else v.get(f.name) for v in values], f.type) for f in fields
    ]
    return _masked(pa.StructArray.from_arrays(children, fields=fields), values)


def _offsets(values: Sequence[Any], kind: pa.DataType) -> tuple[pa.Array, list[Any]]:
    """The offsets of list values (a null one repeats the last) and their items."""
    offsets = [0]
    flat: list[Any] = []
    for value in values:
        if value is not None:
            flat.extend(value)
        offsets.append(len(flat))
    width = pa.int64() if pa.types.is_large_list(kind) else pa.int32()
    return _primitive(offsets, width), flat


def _list(values: Sequence[Any], kind: pa.ListType) -> pa.Array:
    offsets, flat = _offsets(values, kind)
    items = array(flat, kind.value_type)
    if pa.types.is_large_list(kind):
        return _masked(pa.LargeListArray.from_arrays(offsets, items, type=kind), values)
    return _masked(pa.ListArray.from_arrays(offsets, items, type=kind), values)


def _map(values: Sequence[Any], kind: pa.MapType) -> pa.Array:
    pairs = [None if v is None else list(v.items() if isinstance(v, dict) else v) for v in values]
    offsets, flat = _offsets(pairs, kind)
    keys = array([k for k, _ in flat], kind.key_type)
    items = array([v for _, v in flat], kind.item_type)
    return _masked(pa.MapArray.from_arrays(offsets, keys, items, type=kind), pairs)


def _as_integers(kind: pa.DataType) -> tuple[pa.DataType, Callable[[Any], int]] | None:
    """For a temporal type: its storage type and how a Python value becomes it."""
    if pa.types.is_timestamp(kind):
        per_second = _PER_SECOND[kind.unit]

        def stamp(value: dt.datetime) -> int:
            return _in_units(value - (_EPOCH if value.tzinfo is None else _EPOCH_UTC), per_second)

        return pa.int64(), stamp
    if pa.types.is_date32(kind):
        return pa.int32(), lambda value: (value - _EPOCH.date()).days
    if pa.types.is_duration(kind):
        per_second = _PER_SECOND[kind.unit]
        return pa.int64(), lambda value: _in_units(value, per_second)
    return None


def _in_units(span: dt.timedelta, per_second: int) -> int:
    """`span` in whole units of 1/per_second s (exact: no float on the way)."""
    micros = (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds
    return micros * per_second // 1_000_000


def scalar(value: Any, kind: pa.DataType) -> pa.Scalar:
    """`value` as an Arrow scalar, for compute functions (which would call pa.scalar)."""
    return array([value], kind)[0]


def empty_table(schema: pa.Schema) -> pa.Table:
    """A table of `schema` with no rows (``schema.empty_table()`` imports pandas)."""
    return pa.Table.from_arrays([array([], f.type) for f in schema], schema=schema)


__all__ = ["array", "empty_table", "scalar"]
