"""The Python API for notebooks: lwbatch.score() -> an Arrow table, flatten() -> pandas."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import lwbatch
from lwbatch import Budget, Endpoint, UsageError
from lwbatch.durability.journal import FileJournal
from lwbatch.settings import Connection, Files
from tests.conftest import EmulatorFactory, emulated_p_true


def damaging(rev: int) -> dict[str, object]:
    p = emulated_p_true("enwiki-damaging", rev)
    return {
        "prediction": p > 0.5,
        "probability": [("false", round(1 - p, 4)), ("true", p)],
        "model_version": "0.5.1",
        "error": None,
        "error_message": None,
    }


def test_rev_ids_in_a_table_out(emulator: EmulatorFactory) -> None:
    with emulator() as (emu, base_url):
        table = lwbatch.score(
            [7, 8, 7],
            models=["enwiki-damaging"],
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
        )
        assert emu.stats.requests == 2
    assert table.sort_by("rev_id").to_pylist() == [
        {"rev_id": 7, "enwiki-damaging": damaging(7)},
        {"rev_id": 8, "enwiki-damaging": damaging(8)},
    ]


async def test_inside_a_running_event_loop_as_in_jupyter(emulator: EmulatorFactory) -> None:
    asyncio.get_running_loop()  # this test runs inside one
    with emulator() as (_, base_url):
        options: dict[str, Any] = {
            "connection": Connection(endpoint=Endpoint(base_url=base_url)),
            "rate": Budget.unlimited(),
        }
        table = lwbatch.score([9], models=["enwiki-damaging"], **options)
        awaited = await lwbatch.score_async([9], models=["enwiki-damaging"], **options)
    assert (
        table.to_pylist() == awaited.to_pylist() == [{"rev_id": 9, "enwiki-damaging": damaging(9)}]
    )


def test_a_dataframe_of_several_wikis_flattens_with_integer_rev_ids(
    emulator: EmulatorFactory,
) -> None:
    frame = pd.DataFrame({"revision_id": [5, 5, None], "wiki_db": ["enwiki", "dewiki", "enwiki"]})
    with emulator() as (_, base_url):
        table = lwbatch.score(
            frame,
            models=["{wiki}-damaging"],
            id_column="revision_id",
            wiki_column="wiki_db",
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
        )
    flat = lwbatch.flatten(table.sort_by([("wiki_db", "ascending"), ("rev_id", "ascending")]))
    assert list(flat.columns) == [
        "wiki_db",
        "rev_id",
        "{wiki}-damaging.prediction",
        "{wiki}-damaging.false",
        "{wiki}-damaging.true",
        "{wiki}-damaging.model_version",
        "{wiki}-damaging.error",
        "{wiki}-damaging.error_message",
    ]
    assert str(flat["rev_id"].dtype) == "Int64"  # not float64, despite the invalid row
    de = emulated_p_true("dewiki-damaging", 5)
    en = emulated_p_true("enwiki-damaging", 5)
    rows = flat.astype(object).where(flat.notna(), None).to_dict("records")
    assert rows == [
        {
            "wiki_db": "dewiki",
            "rev_id": 5,
            "{wiki}-damaging.prediction": de > 0.5,
            "{wiki}-damaging.false": round(1 - de, 4),
            "{wiki}-damaging.true": de,
            "{wiki}-damaging.model_version": "0.5.1",
            "{wiki}-damaging.error": None,
            "{wiki}-damaging.error_message": None,
        },
        {
            "wiki_db": "enwiki",
            "rev_id": 5,
            "{wiki}-damaging.prediction": en > 0.5,
            "{wiki}-damaging.false": round(1 - en, 4),
            "{wiki}-damaging.true": en,
            "{wiki}-damaging.model_version": "0.5.1",
            "{wiki}-damaging.error": None,
            "{wiki}-damaging.error_message": None,
        },
        {
            "wiki_db": "enwiki",
            "rev_id": None,
            "{wiki}-damaging.prediction": None,
            "{wiki}-damaging.false": None,
            "{wiki}-damaging.true": None,
            "{wiki}-damaging.model_version": None,
            "{wiki}-damaging.error": "invalid_input",
            "{wiki}-damaging.error_message": "row 3: revision_id is null",
        },
    ]


@pytest.mark.parametrize(
    ("revisions", "options", "message"),
    [
        ([], {}, "`revisions` is empty: give at least one rev_id"),
        (
            "123",
            {},
            "`revisions` must be rev_ids (a list of integers), a pyarrow Table or a pandas "
            "DataFrame",
        ),
        (
            [1],
            {"files": Files(restart=True)},
            "`restart`, `retry_failed` and `format` are for score_file: lwbatch.score keeps no "
            "journal and returns a table",
        ),
        (
            [1],
            {"files": Files(journal=FileJournal(Path("o.parquet"), models=["m"], manifest={}))},
            "`journal` is for score_file: lwbatch.score keeps no journal",
        ),
        (
            pa.table({"id": [1]}),
            {},
            "`revisions`: no column 'rev_id' (columns: 'id'); name the id column with `id_column`",
        ),
    ],
)
def test_bad_arguments_are_refused_before_any_request(
    revisions: object, options: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError if "no column" not in message else lwbatch.InputError) as info:
        lwbatch.score(revisions, models=["enwiki-damaging"], **options)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_a_rate_as_text_a_report_beside_the_table_and_flatten_of_a_dataframe(
    emulator: EmulatorFactory,
) -> None:
    with emulator() as (emu, base_url):
        table, report = lwbatch.score(
            [7, 8, 7],
            models=["enwiki-damaging"],
            rate="100/s",
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            with_report=True,
        )
    assert emu.stats.requests == 2
    assert (report.budget, report.rows_read, report.duplicate_rows, report.output_rows) == (
        "100/1s",
        3,
        1,
        2,
    )
    from_table = lwbatch.flatten(table.sort_by("rev_id"))
    from_frame = lwbatch.flatten(table.sort_by("rev_id").to_pandas())
    assert from_frame.equals(from_table)
    assert list(from_frame["rev_id"]) == [7, 8]


def test_flatten_of_a_dataframe_with_an_invalid_row_keeps_integer_rev_ids(
    emulator: EmulatorFactory,
) -> None:
    with emulator() as (_, base_url):
        table = lwbatch.score(
            [7, "x", 8],
            models=["enwiki-damaging"],
            rate="unlimited",
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
        )
    frame = table.to_pandas()
    assert str(frame["rev_id"].dtype) == "float64"  # pandas' own choice for a missing id
    flat = lwbatch.flatten(frame)
    assert str(flat["rev_id"].dtype) == "Int64"
    assert sorted(flat["rev_id"].dropna().tolist()) == [7, 8]
    assert int(flat["rev_id"].isna().sum()) == 1
