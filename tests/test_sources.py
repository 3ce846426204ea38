from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from lwbatch.errors import InputError, UsageError
from lwbatch.io.inputs import open_source
from lwbatch.io.sources import CsvSource
from lwbatch.keys import KeyLayout, RowKey
from lwbatch.results import InvalidRow, Revision
from lwbatch.seams import Source
from lwbatch.wikis import Wiki, wikis
from tests.conftest import rev, write_parquet


def items(source: Source) -> list[Revision | InvalidRow]:
    return [item for batch in source.batches() for item in batch]


def test_parquet_streams_in_batches_with_lang(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "r.parquet",
        {"rev_id": pa.array(range(1, 11), pa.int64()), "lang": ["en", "de", None, "", " fr "] * 2},
    )
    source = open_source(path, batch_rows=4, lang="es")
    assert source.total_rows == 10
    assert source.key_layout == KeyLayout("lang")
    assert [len(b) for b in source.batches()] == [4, 4, 2]
    # An empty lang takes `lang`; either way the key holds the row's language.
    assert items(source)[:5] == [
        rev(1, "en", keyed=True),
        rev(2, "de", keyed=True),
        rev(3, "es", keyed=True),
        rev(4, "es", keyed=True),
        rev(5, "fr", keyed=True),
    ]
    assert [item.key for item in items(source)[:3]] == [  # type: ignore[union-attr]
        RowKey("en", 1),
        RowKey("de", 2),
        RowKey("es", 3),
    ]


def test_the_first_batch_is_small_so_the_first_requests_leave_at_once(tmp_path: Path) -> None:
    # 5,000 rows, one batch of 4,096 and the rest: the first 1,024 rows come on their own,
    # and every row comes once, in order, with its row number.
    ids = [*range(1, 4001), 0, *range(4001, 5000)]
    path = write_parquet(tmp_path / "r.parquet", {"rev_id": pa.array(ids, pa.int64())})
    source = open_source(path, batch_rows=4096)
    assert [len(b) for b in source.batches()] == [1024, 3072, 904]
    got = items(source)
    assert [item.rev_id for item in got if isinstance(item, Revision)] == [
        *range(1, 4001),
        *range(4001, 5000),
    ]
    assert [item.row for item in got if isinstance(item, InvalidRow)] == [4001]


def test_large_batches_are_converted_a_piece_at_a_time(tmp_path: Path) -> None:
    # Python values take ~16 times the memory of Arrow's: a 20,000-row batch of a Parquet
    # file, or one CSV block, comes as pieces of at most 8,192 rows, every row once.
    path = write_parquet(tmp_path / "r.parquet", {"rev_id": pa.array(range(1, 20_001))})
    source = open_source(path, batch_rows=65_536)
    assert [len(b) for b in source.batches()] == [1024, 8192, 8192, 2592]
    assert [item.rev_id for item in items(source)] == list(range(1, 20_001))  # type: ignore[union-attr]
    csv = tmp_path / "r.csv"
    csv.write_text("rev_id\n" + "".join(f"{i}\n" for i in range(1, 12_001)))
    assert [len(b) for b in open_source(csv).batches()] == [1024, 8192, 2784]


def test_invalid_ids_become_invalid_rows_with_their_row_number(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "r.parquet", {"rev_id": pa.array([5, None, 0, -3, 7], pa.int64())}
    )
    assert items(open_source(path)) == [
        rev(5, "en"),
        InvalidRow(2, None, "rev_id is null"),
        InvalidRow(3, 0, "rev_id 0 is not a positive integer"),
        InvalidRow(4, -3, "rev_id -3 is not a positive integer"),
        rev(7, "en"),
    ]


def test_float_ids_from_pandas_are_accepted_when_integral(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "r.parquet", {"rev_id": pa.array([12.0, float("nan"), 1.5])})
    assert items(open_source(path)) == [
        rev(12, "en"),
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
        rev(12, "en"),
        InvalidRow(2, None, "rev_id is null"),
        rev(13, "en"),
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
        rev(11, "de", keyed=True),
        rev(12, "en", keyed=True),
        InvalidRow(3, None, "revision 'abc' is not an integer", "en"),
        InvalidRow(4, None, "revision 99999999999999999999 does not fit in int64", "en"),
        InvalidRow(5, -4, "revision -4 is not a positive integer", "en"),
        InvalidRow(6, None, "revision is null", "en"),
    ]


def test_tsv_and_gzipped_csv(tmp_path: Path) -> None:
    import gzip

    tsv = tmp_path / "r.tsv"
    tsv.write_text("rev_id\tlang\n8\tfr\n")
    assert items(open_source(tsv)) == [rev(8, "fr", keyed=True)]
    gz = tmp_path / "r.csv.gz"
    gz.write_bytes(gzip.compress(b"rev_id\n9\n10\n"))
    assert items(open_source(gz)) == [rev(9, "en"), rev(10, "en")]


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


def test_lang_values_are_checked_row_by_row_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "rev_id,lang\n1,en\n2,enwiki\n3,EN\n4,en-GB\n5,wikidatawiki\n6,xx\n7,zh-yue\n8,yue\n9,nan\n"
    )
    en = rev(1, "en", keyed=True)
    yue = Revision(7, wikis().from_dbname("zh_yuewiki"), "yue")
    assert items(open_source(path)) == [
        en,
        rev(2, "en", keyed=True),  # a Wikipedia's database name is read as the wiki
        InvalidRow(3, 3, "lang 'EN' must be lower case: 'en'", "EN"),
        InvalidRow(4, 4, "lang 'en-GB' is a locale; Wikipedias go by language code: 'en'", "en-GB"),
        InvalidRow(
            5,
            5,
            "lang 'wikidatawiki' is the database name of a wiki that is not a Wikipedia; "
            "name a column of database names with `wiki_column`",
            "wikidatawiki",
        ),
        InvalidRow(6, 6, "lang 'xx' is not the language code of a Wikipedia", "xx"),
        yue,
        Revision(8, yue.wiki, "yue"),  # host and code: one wiki, one key
        # "nan" is Min Nan's code, not a missing value (pyarrow's default null list).
        Revision(9, wikis().from_dbname("zh_min_nanwiki"), "nan"),
    ]


def test_a_wiki_column_of_database_names_keys_rows_by_their_wiki(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "lake.parquet",
        {
            "wiki_db": ["enwiki", "zh_yuewiki", "eswikibooks", None, "ENWIKI", "xxyzwiki", "en"],
            "revision_id": pa.array([10, 10, 11, 12, 13, 14, 15], pa.int64()),
            "page_id": pa.array([100, None, 101, 102, 103, 104, 105], pa.int64()),
        },
    )
    source = open_source(path, id_column="revision_id", wiki_column="wiki_db")
    assert source.key_layout == KeyLayout("wiki_db")
    table = wikis()
    assert items(source) == [
        Revision(10, table.from_dbname("enwiki"), "enwiki", 100),
        Revision(10, table.from_dbname("zh_yuewiki"), "zh_yuewiki", None),
        Revision(11, table.from_dbname("eswikibooks"), "eswikibooks", 101),
        InvalidRow(4, 12, "wiki_db is empty: each row needs its wiki's database name", None),
        InvalidRow(5, 13, "wiki_db 'ENWIKI' must be lower case: 'enwiki'", "ENWIKI"),
        Revision(14, Wiki("xxyzwiki"), "xxyzwiki", 104),  # unknown to lwbatch, kept
        InvalidRow(7, 15, "wiki_db 'en' is not a database name; this wiki's is 'enwiki'", "en"),
    ]


def test_wiki_column_and_lang_are_checked_when_the_source_opens(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("rev_id,wiki\n1,enwiki\n")
    with pytest.raises(InputError) as info:
        open_source(path, wiki_column="wiki_db")
    assert str(info.value) == (
        f"{path}: no column 'wiki_db' for `wiki_column` (columns: 'rev_id', 'wiki')"
    )
    with pytest.raises(UsageError) as usage:
        open_source(path, lang="EN")
    assert str(usage.value) == "`lang` 'EN' must be lower case: 'en'"
    with pytest.raises(UsageError, match="`wiki_column` 'rev_id' is the name of the id column"):
        open_source(path, wiki_column="rev_id")
    numbers = write_parquet(tmp_path / "n.parquet", {"rev_id": [1], "wiki_db": [7]})
    with pytest.raises(InputError, match="column 'wiki_db' has type int64; wikis must be text"):
        open_source(numbers, wiki_column="wiki_db")
