"""Row keys: their JSON form in the journal, and the compact set a resume reads them into."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lwbatch.keys import KeySet, RowKey, key_from_json, key_to_json

BIG = 2**63 - 1  # the largest rev_id an int64 column holds


@pytest.mark.parametrize("rev_id", [1, 101, 2_100_000_001, BIG])
def test_a_key_survives_its_json_form(rev_id: int) -> None:
    key = RowKey(rev_id)
    assert key_to_json(key) == [rev_id]
    back = key_from_json(orjson.loads(orjson.dumps(key_to_json(key))))
    assert back == key and type(back) is RowKey


def test_the_old_journal_form_a_bare_rev_id_is_read() -> None:
    key = key_from_json(101)
    assert key == RowKey(101) and type(key) is RowKey


@pytest.mark.parametrize(
    "value",
    [True, False, [True], "7", "77", ["7"], [7.0], 7.0, None, [], [7, 8], [[7]], {"rev_id": 7}],
    ids=repr,
)
def test_a_foreign_key_is_refused_with_value_or_type_error(value: Any) -> None:
    # journal.decode_answer catches exactly these two to skip a torn or foreign line.
    with pytest.raises((ValueError, TypeError)):
        key_from_json(value)


def test_a_key_set_holds_each_key_once() -> None:
    keys = KeySet([RowKey(101), RowKey(BIG), RowKey(101)])
    assert len(keys) == 2
    assert RowKey(101) in keys and RowKey(BIG) in keys
    assert RowKey(102) not in keys
    keys.add(RowKey(102))
    keys.update([RowKey(103), RowKey(101)])
    assert len(keys) == 4
    assert [RowKey(r) in keys for r in (101, 102, 103, 104)] == [True, True, True, False]
    assert len(KeySet()) == 0 and RowKey(101) not in KeySet()


@pytest.mark.parametrize("other", [101, (101,), [101], "101", None], ids=repr)
def test_a_key_set_holds_no_value_that_is_not_a_row_key(other: Any) -> None:
    # (101,) == RowKey(101) as tuples; a key set still answers only for keys.
    assert other not in KeySet([RowKey(101)])
