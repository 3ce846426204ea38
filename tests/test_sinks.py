from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch.errors import IncompleteRunError, OutputError
from lwbatch.io.parquet_sink import ParquetSink, output_schema
from lwbatch.protocol.catalog import default_catalog
from lwbatch.results import ErrorType, Score, ScoredRow

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


def test_rows_are_written_in_row_groups_and_appear_only_on_commit(tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    ok = {
        "enwiki-damaging": Score(True, {"false": 0.2, "true": 0.8}, "0.5.1"),
        "enwiki-articlequality": Score("GA", {"GA": 0.7, "FA": 0.3}, "0.9.2"),
        "enwiki-articletopic": Score(["STEM.STEM*"], {"STEM.STEM*": 0.9}, "1.3"),
        "readability": Score(0.64, None, "2"),
    }
    failed = {m: Score.failed(ErrorType.NOT_FOUND, "gone") for m in MODELS}
    with ParquetSink(out, specs(), row_group_size=2) as sink:
        for rev in range(1, 6):
            sink.write(ScoredRow(rev, ok if rev % 2 else failed))
        assert not out.exists()
        assert len(list(tmp_path.iterdir())) == 1  # the hidden temporary file
    assert pq.ParquetFile(out).metadata.num_row_groups == 3
    table = pq.read_table(out)
    rows = table.to_pylist()
    assert [r["rev_id"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["enwiki-damaging"] == {
        "prediction": True,
        "probability": [("false", 0.2), ("true", 0.8)],
        "model_version": "0.5.1",
        "error": None,
        "error_message": None,
    }
    assert rows[0]["enwiki-articletopic"]["prediction"] == ["STEM.STEM*"]
    assert rows[0]["readability"]["probability"] is None
    assert rows[1]["enwiki-damaging"] == {
        "prediction": None,
        "probability": None,
        "model_version": None,
        "error": "not_found",
        "error_message": "gone",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]


def test_an_aborted_run_leaves_no_file_and_keeps_an_old_one(tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous results")
    with pytest.raises(RuntimeError), ParquetSink(out, specs()) as sink:
        sink.write(ScoredRow(1, {m: Score.failed(ErrorType.NOT_FOUND, "x") for m in MODELS}))
        raise RuntimeError("crash")
    assert out.read_bytes() == b"previous results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]


@pytest.mark.parametrize(
    ("expected", "message"),
    [
        (4, "1 of 4 rows are missing from the output"),
        (2, "the output would hold 1 rows more than the 2 expected"),
    ],
)
def test_a_commit_with_another_row_count_than_expected_moves_nothing_into_place(
    tmp_path: Path, expected: int, message: str
) -> None:
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous results")
    sink = ParquetSink(out, specs()).open()
    for rev in (1, 2, 3):
        sink.write(ScoredRow(rev, {m: Score.failed(ErrorType.NOT_FOUND, "x") for m in MODELS}))
    with pytest.raises(IncompleteRunError) as info:
        sink.commit(expected_rows=expected)
    assert str(info.value) == message
    assert (info.value.written, info.value.expected) == (3, expected)
    sink.abort()
    assert out.read_bytes() == b"previous results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]


def test_unwritable_destinations(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="its directory does not exist"):
        ParquetSink(tmp_path / "missing" / "o.parquet", specs()).open()
    (tmp_path / "d.parquet").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        ParquetSink(tmp_path / "d.parquet", specs()).open()
