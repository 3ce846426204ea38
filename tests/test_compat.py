"""lwbatch 0.1's keywords still work for one release, each moved into the settings value
it belongs to now, with one DeprecationWarning that says where."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lwbatch
from lwbatch import Budget, Connection, Endpoint, Files, Pacing, Scorer, UsageError
from lwbatch.compat import translate
from tests.conftest import EmulatorFactory, write_parquet


def test_score_file_takes_the_old_keywords_and_says_where_each_went(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2, 3], pa.int64())})
    started: list[str] = []
    with emulator() as (emu, base_url):
        with pytest.warns(DeprecationWarning) as said:
            old = lwbatch.score_file(
                inp,
                tmp_path / "old.parquet",
                models=["enwiki-damaging"],
                endpoint=Endpoint(base_url=base_url),
                budget=Budget.unlimited(),
                concurrency=2,
                journal=False,
                on_start=lambda source, scorer: started.append(source.name),
            )
        new = lwbatch.score_file(
            inp,
            tmp_path / "new.parquet",
            models=["enwiki-damaging"],
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            pacing=Pacing(concurrency=2),
            files=Files(journal=False),
        )
    assert [str(w.message) for w in said] == [
        "score_file: `endpoint=` goes in Connection(endpoint=...); `budget=` is "
        "`rate=`; `concurrency=` goes in Pacing(concurrency=...); `journal=` goes in "
        "Files(journal=...); `on_start=` goes in Hooks(on_start=...) (the old keywords go "
        "in the next release)"
    ]
    assert said[0].filename == __file__  # the warning points at the caller's line
    assert started == [str(inp)]
    assert old.rows_written == new.rows_written == 3
    assert pq.read_table(tmp_path / "old.parquet") == pq.read_table(tmp_path / "new.parquet")
    assert emu.stats.requests == 6


def test_an_old_keyword_and_its_new_name_together_are_refused() -> None:
    with pytest.raises(UsageError, match=r"^give `rate` \(which `budget` was\), not both$"):
        translate("score_file", {"budget": "1/s", "rate": "2/s"}, values=())


def test_an_old_keyword_joins_a_value_given_beside_it() -> None:
    with pytest.warns(DeprecationWarning):
        kwargs = translate(
            "score_file",
            {"token": lwbatch.Token("t"), "connection": Connection(contact="me@example.org")},
            values=("connection",),
        )
    assert kwargs["connection"].contact == "me@example.org"
    assert kwargs["connection"].token == lwbatch.Token("t")
    # The same field twice, in the value and as a keyword: which one was meant?
    with pytest.raises(UsageError, match=r"^give `contact` once: in the Connection or as a "):
        translate(
            "plan_file",
            {"contact": "you@example.org", "connection": Connection(contact="me@example.org")},
            values=("connection",),
        )


def test_sparks_old_column_keywords() -> None:
    with pytest.warns(DeprecationWarning, match="`id_col=` is `id_column=`"):
        kwargs = translate("score", {"id_col": "revision_id", "lang_col": "lang"}, values=())
    assert kwargs == {"id_column": "revision_id"}
    with pytest.raises(UsageError, match="^`lang_col` 'language': name the column"):
        translate("score", {"lang_col": "language"}, values=())


async def test_a_scorer_takes_the_old_keywords_too(emulator: EmulatorFactory) -> None:
    with emulator() as (emu, base_url):
        with pytest.warns(DeprecationWarning, match="`endpoint=` goes in Connection"):
            scorer = Scorer(
                ["enwiki-damaging"], endpoint=Endpoint(base_url=base_url), budget="100/s"
            )
        async with scorer:
            rows = [row async for row in scorer.score([5])]
    assert [r.rev_id for r in rows] == [5] and emu.stats.requests == 1
    assert scorer.budget.describe() == "100/1s"
