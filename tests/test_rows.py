"""Merged rows as Arrow (lwbatch/io/rows.py) and the sink an output's name chooses
(lwbatch/io/sinks.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from lwbatch.errors import UsageError
from lwbatch.io.parquet_sink import ParquetSink
from lwbatch.io.rows import RowBuffer, output_schema
from lwbatch.io.sinks import open_sink
from lwbatch.keys import KeyLayout, RowKey
from lwbatch.protocol.catalog import default_catalog
from lwbatch.results import ErrorType, InvalidRow, Score, ScoredRow

# One model of each prediction type, in an order that is neither sorted nor reversed.
MODELS = ["enwiki-drafttopic", "readability", "enwiki-damaging", "enwiki-articlequality"]


def struct(prediction: pa.DataType) -> pa.StructType:
    return pa.struct(
        [
            ("prediction", prediction),
            ("probability", pa.map_(pa.string(), pa.float64())),
            ("model_version", pa.string()),
            ("error", pa.string()),
            ("error_message", pa.string()),
        ]
    )


EXPECTED_SCHEMA = pa.schema(
    [
        ("rev_id", pa.int64()),
        ("enwiki-drafttopic", struct(pa.list_(pa.string()))),
        ("readability", struct(pa.float64())),
        ("enwiki-damaging", struct(pa.bool_())),
        ("enwiki-articlequality", struct(pa.string())),
    ]
)


def test_the_schema_is_the_key_then_one_struct_per_model_in_the_order_given() -> None:
    specs = default_catalog().resolve_all(MODELS)
    assert output_schema(specs) == EXPECTED_SCHEMA
    assert RowBuffer(specs).schema == EXPECTED_SCHEMA
    backwards = output_schema(specs[::-1])
    assert backwards.names == ["rev_id", *MODELS[::-1]]


def test_invalid_rows_keep_their_raw_rev_id_and_take_empties_the_buffer() -> None:
    specs = default_catalog().resolve_all(["enwiki-damaging", "enwiki-articlequality"])
    buffer = RowBuffer(specs)
    damaging = Score(True, {"false": 0.25, "true": 0.75}, "0.5.1")
    quality = Score.failed(ErrorType.NOT_FOUND, "no such revision")
    buffer.add(
        ScoredRow(RowKey("", 101), {"enwiki-damaging": damaging, "enwiki-articlequality": quality})
    )
    invalid = Score.failed(ErrorType.INVALID_INPUT, "not a positive integer")
    for row, raw in ((2, -5), (4, 0), (7, None)):
        buffer.add(
            ScoredRow(
                None,
                {"enwiki-damaging": invalid, "enwiki-articlequality": invalid},
                InvalidRow(row, raw, "not a positive integer"),
            )
        )
    assert len(buffer) == 4

    table, invalid_rows = buffer.take()
    assert table.schema == output_schema(specs)
    assert invalid_rows == [2, 4, 7]
    failed = {
        "prediction": None,
        "probability": None,
        "model_version": None,
        "error": "invalid_input",
        "error_message": "not a positive integer",
    }
    assert table.to_pylist() == [
        {
            "rev_id": 101,
            "enwiki-damaging": {
                "prediction": True,
                "probability": [("false", 0.25), ("true", 0.75)],
                "model_version": "0.5.1",
                "error": None,
                "error_message": None,
            },
            "enwiki-articlequality": {
                "prediction": None,
                "probability": None,
                "model_version": None,
                "error": "not_found",
                "error_message": "no such revision",
            },
        },
        *(
            {"rev_id": raw, "enwiki-damaging": failed, "enwiki-articlequality": failed}
            for raw in (-5, 0, None)
        ),
    ]

    assert len(buffer) == 0
    empty, none = buffer.take()
    assert (empty.num_rows, none, empty.schema) == (0, [], output_schema(specs))


def test_sealed_parts_keep_their_place_whichever_is_built_first() -> None:
    specs = default_catalog().resolve_all(["enwiki-damaging"])
    buffer = RowBuffer(specs)

    def add(rev_id: int) -> None:
        score = Score(rev_id % 2 == 0, {"true": rev_id / 10}, "1")
        buffer.add(ScoredRow(RowKey("", rev_id), {"enwiki-damaging": score}))

    add(1)
    add(2)
    first = buffer.seal()
    add(3)
    second = buffer.seal()
    add(4)
    assert (len(buffer), buffer.pending) == (4, 1)
    build = buffer.detach()
    assert (len(buffer), buffer.pending) == (0, 0)
    with pytest.raises(RuntimeError, match="before every sealed part was built"):
        build()
    second()  # built out of order: its rows still come after the first part's
    first()
    table, invalid_rows = build()
    assert invalid_rows == []
    assert [(r["rev_id"], r["enwiki-damaging"]["probability"]) for r in table.to_pylist()] == [
        (1, [("true", 0.1)]),
        (2, [("true", 0.2)]),
        (3, [("true", 0.3)]),
        (4, [("true", 0.4)]),
    ]


def test_with_a_wiki_column_the_key_is_wiki_then_rev_id_and_invalid_rows_keep_raw_values() -> None:
    specs = default_catalog().resolve_all(["revertrisk-language-agnostic"])
    buffer = RowBuffer(specs, KeyLayout("wiki_db"))
    assert buffer.schema.names == ["wiki_db", "rev_id", "revertrisk-language-agnostic"]
    assert buffer.schema.field("wiki_db").type == pa.string()
    score = Score(False, {"true": 0.25, "false": 0.75}, "3")
    bad = Score.failed(ErrorType.INVALID_INPUT, "wiki_db 'ENWIKI' must be lower case: 'enwiki'")
    buffer.add(ScoredRow(RowKey("dewiki", 12), {"revertrisk-language-agnostic": score}))
    buffer.add(ScoredRow(RowKey("enwiki", 12), {"revertrisk-language-agnostic": score}))
    buffer.add(
        ScoredRow(
            None,
            {"revertrisk-language-agnostic": bad},
            InvalidRow(3, 12, "wiki_db 'ENWIKI' must be lower case: 'enwiki'", "ENWIKI"),
        )
    )
    table, invalid_rows = buffer.take()
    assert invalid_rows == [3]
    assert table.select(["wiki_db", "rev_id"]).to_pylist() == [
        {"wiki_db": "dewiki", "rev_id": 12},
        {"wiki_db": "enwiki", "rev_id": 12},
        {"wiki_db": "ENWIKI", "rev_id": 12},
    ]
    cells = table.column("revertrisk-language-agnostic").to_pylist()
    assert [c["error"] for c in cells] == [None, None, "invalid_input"]


@pytest.mark.parametrize("name", ["out.parquet", "out.pq", "OUT.PARQUET", "out.Pq"])
def test_a_parquet_name_gets_a_parquet_sink(tmp_path: Path, name: str) -> None:
    sink = open_sink(tmp_path / name, input=str(tmp_path / "in.parquet"))
    assert type(sink) is ParquetSink and sink.path == tmp_path / name


@pytest.mark.parametrize("name", ["out.csv", "out.parquet.gz", "out"])
def test_another_name_is_refused_naming_output(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError) as info:
        open_sink(tmp_path / name)
    assert str(info.value) == (
        f"`output` {tmp_path / name}: name the file *.parquet, *.jsonl or *.json, or give "
        "`format` (parquet, long, jsonl, ores-json)"
    )
    with pytest.raises(UsageError) as info:
        open_sink(tmp_path / name, format="xml")
    assert str(info.value) == "`format` 'xml': give one of parquet, long, jsonl, ores-json"


def test_the_input_file_is_refused_as_output_however_it_is_spelled(tmp_path: Path) -> None:
    inp = tmp_path / "in.parquet"
    inp.write_bytes(b"PAR1")
    (tmp_path / "sub").mkdir()
    os.symlink(inp, tmp_path / "link.parquet")
    for output in (inp, tmp_path / "sub" / ".." / "in.parquet", tmp_path / "link.parquet"):
        with pytest.raises(UsageError) as info:
            open_sink(output, input=str(inp))
        assert str(info.value) == (
            f"`output` {output} is the input file; choose another output path"
        )
    # Another file, or no input given: accepted.
    assert type(open_sink(tmp_path / "out.parquet", input=str(inp))) is ParquetSink
    assert type(open_sink(inp)) is ParquetSink
