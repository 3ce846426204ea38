"""Row keys: (wiki, rev_id), their JSON form in the journal, the key columns, and the
compact set a resume reads them into."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pytest

from lwbatch.keys import KeyLayout, KeySet, RowKey, key_from_json, key_to_json

BIG = 2**63 - 1  # the largest rev_id an int64 column holds


@pytest.mark.parametrize("rev_id", [1, 101, 2_100_000_001, BIG])
@pytest.mark.parametrize(("wiki", "form"), [("", "[rev_id]"), ("zh_yuewiki", "[wiki, rev_id]")])
def test_a_key_survives_its_json_form(rev_id: int, wiki: str, form: str) -> None:
    key = RowKey(wiki, rev_id)
    assert key_to_json(key) == ([rev_id] if form == "[rev_id]" else [wiki, rev_id])
    back = key_from_json(orjson.loads(orjson.dumps(key_to_json(key))))
    assert back == key and type(back) is RowKey


def test_the_old_journal_forms_are_read_as_keys_without_a_wiki() -> None:
    assert key_from_json(101) == RowKey("", 101)
    assert key_from_json([101]) == RowKey("", 101)


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        [True],
        "7",
        "77",
        ["7"],
        [7.0],
        7.0,
        None,
        [],
        [7, 8],
        [[7]],
        {"rev_id": 7},
        ["en", "7"],
        ["en", 7, 8],
        [None, 7],
        ["en", True],
    ],
    ids=repr,
)
def test_a_foreign_key_is_refused_with_value_or_type_error(value: Any) -> None:
    # journal.decode_answer catches exactly these two to skip a torn or foreign line.
    with pytest.raises((ValueError, TypeError)):
        key_from_json(value)


def test_a_key_set_holds_each_key_once_per_wiki() -> None:
    keys = KeySet([RowKey("en", 101), RowKey("en", BIG), RowKey("en", 101)])
    assert len(keys) == 2
    assert RowKey("en", 101) in keys and RowKey("en", BIG) in keys
    assert RowKey("en", 102) not in keys
    # The same rev_id on another wiki is another revision.
    assert RowKey("de", 101) not in keys and RowKey("", 101) not in keys
    keys.add(RowKey("de", 101))
    keys.update([RowKey("en", 103), RowKey("en", 101), RowKey("", 101)])
    assert len(keys) == 5
    assert [RowKey(w, 101) in keys for w in ("en", "de", "", "fr")] == [True, True, True, False]
    assert len(KeySet()) == 0 and RowKey("", 101) not in KeySet()


@pytest.mark.parametrize("other", [101, ("", 101), ["", 101], "101", None], ids=repr)
def test_a_key_set_holds_no_value_that_is_not_a_row_key(other: Any) -> None:
    # ("", 101) == RowKey("", 101) as tuples; a key set still answers only for keys.
    assert other not in KeySet([RowKey("", 101)])


def test_the_key_columns_follow_the_inputs_wiki_column() -> None:
    assert [f.name for f in KeyLayout().fields] == ["rev_id"]
    layout = KeyLayout("wiki_db")
    assert [(f.name, f.type) for f in layout.fields] == [
        ("wiki_db", pa.string()),
        ("rev_id", pa.int64()),
    ]
    table = pa.table({"wiki_db": ["enwiki", "dewiki"], "rev_id": [7, 7], "x": [1, 2]})
    assert list(layout.keys_of(table)) == [RowKey("enwiki", 7), RowKey("dewiki", 7)]
    assert list(KeyLayout().keys_of(table)) == [RowKey("", 7), RowKey("", 7)]
