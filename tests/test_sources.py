from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from lwbatch.errors import InputError
from lwbatch.io.sources import CsvSource, ParquetSource, open_source
from lwbatch.results import InvalidRow, Revision
from lwbatch.seams import Source
from tests.conftest import write_parquet


def items(source: Source) -> list[Revision | InvalidRow]:
    return [item for batch in source.batches() for item in batch]


def test_parquet_streams_in_batches_with_lang(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "r.parquet",
        {"rev_id": pa.array(range(1, 11), pa.int64()), "lang": ["en", "de", None, "", " FR "] * 2},
    )
    source = open_source(path, batch_rows=4, default_lang="es")
    assert isinstance(source, ParquetSource) and isinstance(source, Source)
    assert source.total_rows == 10 and source.has_lang
    assert [len(b) for b in source.batches()] == [4, 4, 2]
    assert items(source)[:5] == [
        Revision(1, "en"),
        Revision(2, "de"),
        Revision(3, "es"),
        Revision(4, "es"),
        Revision(5, "fr"),
    ]


def test_invalid_ids_become_invalid_rows_with_their_row_number(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "r.parquet", {"rev_id": pa.array([5, None, 0, -3, 7], pa.int64())}
    )
    assert items(open_source(path)) == [
        Revision(5, "en"),
        InvalidRow(2, None, "rev_id is null"),
        InvalidRow(3, 0, "rev_id 0 is not a positive integer"),
        InvalidRow(4, -3, "rev_id -3 is not a positive integer"),
        Revision(7, "en"),
    ]


def test_float_ids_from_pandas_are_accepted_when_integral(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "r.parquet", {"rev_id": pa.array([12.0, float("nan"), 1.5])})
    assert items(open_source(path)) == [
        Revision(12, "en"),
        InvalidRow(2, None, "rev_id is null"),
        InvalidRow(3, None, "rev_id 1.5 is not an integer"),
    ]


def test_unsigned_ids_beyond_int64_are_invalid(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "r.parquet", {"rev_id": pa.array([3, 2**63], pa.uint64())})
    assert items(open_source(path))[1] == InvalidRow(
        2, None, f"rev_id {2**63} does not fit in int64"
    )


def test_csv_as_pandas_writes_an_id_column_with_nulls(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("rev_id,title\n12.0,a\n,b\n13.00,c\n13.5,d\n1e3,e\n")
    assert items(open_source(path)) == [
        Revision(12, "en"),
        InvalidRow(2, None, "rev_id is null"),
        Revision(13, "en"),
        InvalidRow(4, None, "rev_id '13.5' is not an integer"),
        InvalidRow(5, None, "rev_id '1e3' is not an integer"),
    ]


def test_csv_with_text_ids_bom_quotes_and_custom_column(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(
        '\ufeffpage,revision,lang\n1,"11",de\n2, 12 ,\n3,abc,en\n4,99999999999999999999,en\n'
        "5,-4,en\n6,,en\n".encode()
    )
    source = open_source(path, id_column="revision")
    assert isinstance(source, CsvSource) and source.total_rows is None
    assert items(source) == [
        Revision(11, "de"),
        Revision(12, "en"),
        InvalidRow(3, None, "revision 'abc' is not an integer"),
        InvalidRow(4, None, "revision 99999999999999999999 does not fit in int64"),
        InvalidRow(5, -4, "revision -4 is not a positive integer"),
        InvalidRow(6, None, "revision is null"),
    ]


def test_tsv_and_gzipped_csv(tmp_path: Path) -> None:
    import gzip

    tsv = tmp_path / "r.tsv"
    tsv.write_text("rev_id\tlang\n8\tfr\n")
    assert items(open_source(tsv)) == [Revision(8, "fr")]
    gz = tmp_path / "r.csv.gz"
    gz.write_bytes(gzip.compress(b"rev_id\n9\n10\n"))
    assert items(open_source(gz)) == [Revision(9, "en"), Revision(10, "en")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "is empty (0 bytes)"),
        ("header.csv", b"rev_id,lang\n", "has a header but no rows"),
        (
            "nocol.csv",
            b"id,lang\n1,en\n",
            "no column 'rev_id' (columns: 'id', 'lang'); name the id column",
        ),
        ("semi.csv", b"rev_id;lang\n1;en\n", "the file seems to use another delimiter"),
        ("trunc.parquet", b"PAR1\x00\x00garbage", "not a readable Parquet file"),
        ("notes.txt", b"rev_id\n1\n", "unknown file type '.txt'"),
        ("noext", b"rev_id\n1\n", "unknown file type '(no extension)'"),
    ],
)
def test_unusable_files_are_refused_with_one_line(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        open_source(path)
    assert message in str(info.value)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_wrong_column_type_and_empty_parquet(tmp_path: Path) -> None:
    dates = write_parquet(tmp_path / "d.parquet", {"rev_id": pa.array([True, False])})
    with pytest.raises(InputError, match="column 'rev_id' has type bool; rev_ids must be integers"):
        open_source(dates)
    empty = write_parquet(tmp_path / "e.parquet", {"rev_id": pa.array([], pa.int64())})
    with pytest.raises(InputError, match="has no rows"):
        open_source(empty)


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_source(tmp_path / "nope.parquet")
    with pytest.raises(InputError, match="is a directory"):
        open_source(tmp_path)
