from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch.errors import OutputError
from lwbatch.io.parquet_sink import ParquetSink
from lwbatch.io.rows import RowBuffer, output_schema
from lwbatch.keys import RowKey
from lwbatch.protocol.catalog import default_catalog
from lwbatch.results import ErrorType, InvalidRow, Score, ScoredRow

MODELS = ["enwiki-damaging", "enwiki-articlequality", "enwiki-articletopic", "readability"]


def specs():  # type: ignore[no-untyped-def]
    return default_catalog().resolve_all(MODELS)


def test_schema_has_one_struct_per_model_typed_by_prediction() -> None:
    schema = output_schema(specs())
    assert schema.names == ["rev_id", *MODELS]
    assert schema.field("rev_id").type == pa.int64()
    assert schema.field("enwiki-damaging").type.field("prediction").type == pa.bool_()
    assert schema.field("enwiki-articlequality").type.field("prediction").type == pa.string()
    assert schema.field("enwiki-articletopic").type.field("prediction").type == pa.list_(
        pa.string()
    )
    assert schema.field("readability").type.field("prediction").type == pa.float64()
    assert [f.name for f in schema.field("readability").type] == [
        "prediction",
        "probability",
        "model_version",
        "error",
        "error_message",
    ]
    assert schema.field("readability").type.field("probability").type == pa.map_(
        pa.string(), pa.float64()
    )


def table_of(rows: list[ScoredRow]) -> pa.Table:
    buffer = RowBuffer(specs())
    for row in rows:
        buffer.add(row)
    return buffer.take()[0]


def test_rows_are_written_in_row_groups_and_appear_only_on_commit(tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    ok = {
        "enwiki-damaging": Score(True, {"false": 0.2, "true": 0.8}, "0.5.1"),
        "enwiki-articlequality": Score("GA", {"GA": 0.7, "FA": 0.3}, "0.9.2"),
        "enwiki-articletopic": Score(["STEM.STEM*"], {"STEM.STEM*": 0.9}, "1.3"),
        "readability": Score(0.64, None, "2"),
    }
    failed = {m: Score.failed(ErrorType.NOT_FOUND, "gone") for m in MODELS}
    rows = [ScoredRow(RowKey("", rev), ok if rev % 2 else failed) for rev in range(1, 6)]
    sink = ParquetSink(out)
    sink.open(output_schema(specs()))
    for start in (0, 2, 4):
        sink.write(table_of(rows[start : start + 2]))
    assert not out.exists()
    assert len(list(tmp_path.iterdir())) == 1  # the hidden temporary file
    assert sink.rows_written == 5
    sink.commit({"lwbatch": b"{}"})
    assert pq.ParquetFile(out).metadata.num_row_groups == 3
    table = pq.read_table(out)
    assert pq.ParquetFile(out).metadata.metadata[b"lwbatch"] == b"{}"
    written = table.to_pylist()
    assert [r["rev_id"] for r in written] == [1, 2, 3, 4, 5]
    assert written[0]["enwiki-damaging"] == {
        "prediction": True,
        "probability": [("false", 0.2), ("true", 0.8)],
        "model_version": "0.5.1",
        "error": None,
        "error_message": None,
    }
    assert written[0]["enwiki-articletopic"]["prediction"] == ["STEM.STEM*"]
    assert written[0]["readability"]["probability"] is None
    assert written[1]["enwiki-damaging"] == {
        "prediction": None,
        "probability": None,
        "model_version": None,
        "error": "not_found",
        "error_message": "gone",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]
    read = sink.read_back()
    assert read is not None
    metadata, tables = read
    assert metadata == {"lwbatch": b"{}"}
    assert pa.concat_tables(list(tables)).to_pylist() == written


def test_an_invalid_row_keeps_its_raw_value_and_its_row_number() -> None:
    failed = {m: Score.failed(ErrorType.INVALID_INPUT, "row 7: bad") for m in MODELS}
    buffer = RowBuffer(specs())
    buffer.add(ScoredRow(None, failed, InvalidRow(7, -3, "bad")))
    buffer.add(ScoredRow(None, failed, InvalidRow(9, None, "bad")))
    table, invalid = buffer.take()
    assert table.column("rev_id").to_pylist() == [-3, None]
    assert invalid == [7, 9]
    assert len(buffer) == 0


def test_an_aborted_run_leaves_no_file_and_keeps_an_old_one(tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous results")
    sink = ParquetSink(out)
    sink.open(output_schema(specs()))
    sink.write(
        table_of(
            [ScoredRow(RowKey("", 1), {m: Score.failed(ErrorType.NOT_FOUND, "x") for m in MODELS})]
        )
    )
    assert len(list(tmp_path.iterdir())) == 2
    sink.abort()
    assert out.read_bytes() == b"previous results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]


def test_unwritable_destinations(tmp_path: Path) -> None:
    schema = output_schema(specs())
    with pytest.raises(OutputError, match="its directory does not exist"):
        ParquetSink(tmp_path / "missing" / "o.parquet").open(schema)
    (tmp_path / "d.parquet").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        ParquetSink(tmp_path / "d.parquet").open(schema)
