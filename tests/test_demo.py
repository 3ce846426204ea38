from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lwbatch.cli import main
from lwbatch.resources import sample_path


def test_sample_file_has_duplicates_and_unknown_revisions() -> None:
    ids = pq.read_table(sample_path()).column("rev_id").to_pylist()
    assert len(ids) == 2912 and len(set(ids)) == 2512
    assert sum(1 for i in set(ids) if i > 2_000_000_000) == 12


def test_demo_scores_the_sample_and_shows_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.parquet"
    assert main(["demo", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    table = pq.read_table(out)
    assert table.num_rows == 2512
    assert table.column_names == [
        "lang",
        "rev_id",
        "{wiki}-damaging",
        "{wiki}-goodfaith",
        "revertrisk-language-agnostic",
    ]
    # Every row was scored by its own wiki's models: none refused, none missing.
    for column in table.column_names[2:]:
        errors = table.column(column).combine_chunks().field("error").to_pylist()
        assert set(errors) == {None, "not_found"}, column
    langs = table.column("lang").to_pylist()
    # Distinct (lang, rev_id) rows of the sample: 2,912 input rows less 400 repeats.
    assert {lang: langs.count(lang) for lang in set(langs)} == {"en": 2044, "de": 220, "fr": 248}
    assert "distinct revisions       2,512" in err
    assert f"{out} holds 2,512 rows" in err


def test_demo_follow_writes_two_minutes_of_the_stream_into_parts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "follow"
    assert main(["demo", "--follow", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    parts = sorted(out.glob("date=*/part-*.parquet"))
    assert parts and (out / "_lwbatch_follow.json").is_file()
    table = pq.ParquetDataset(out).read()
    assert table.column_names[:3] == ["wiki_db", "rev_id", "event_time"]
    assert "{wiki}-damaging" in table.column_names
    # 20 events a second for 120 s; enwiki is 2 and dewiki 1 of every 6, namespace 0
    # 6 of 7; canaries and repeats dropped.
    assert 950 <= table.num_rows <= 1_050
    assert set(table.column("wiki_db").to_pylist()) == {"enwiki", "dewiki"}
    assert f"{out}/ holds {table.num_rows:,} rows in {len(parts)} parts" in err
