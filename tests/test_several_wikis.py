"""Inputs that span wikis, end to end against the emulator: rows keyed by (wiki, rev_id),
`{wiki}-KIND` templates, and answers that hold for a whole (model, wiki)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Budget, Endpoint, Rate, Revision
from lwbatch.cli import main
from lwbatch.durability.journal import journal_dir
from lwbatch.engine.scorer import Scorer
from lwbatch.errors import Interrupted, NoModelDeployedError, UsageError
from lwbatch.keys import RowKey
from lwbatch.protocol.catalog import default_catalog
from lwbatch.results import ErrorType, Score
from lwbatch.settings import Connection, Pacing
from lwbatch.testing.emulator import Latency
from lwbatch.wikis import wikis
from tests.conftest import (
    EmulatorFactory,
    FakeClock,
    Script,
    emulated_p_true,
    ok,
    score_until,
    write_parquet,
)

FAST = Budget.from_rate(Rate(5000, 1.0))


async def run(inp: Path, out: Path, base_url: str, **options: Any) -> Any:
    options.setdefault("rate", FAST)
    return await score_until(inp, out, base_url, **options)


def lake_table(path: Path, rows: list[tuple[str, int]]) -> Path:
    """A data-lake style export: wiki_db and revision_id columns."""
    return write_parquet(
        path,
        {
            "wiki_db": [wiki for wiki, _ in rows],
            "revision_id": pa.array([rev for _, rev in rows], pa.int64()),
        },
    )


def cells(path: Path, model: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["wiki_db"], r["rev_id"]): r[model] for r in pq.read_table(path).to_pylist()}


async def test_a_404_for_one_wiki_stops_that_wiki_only_and_a_rerun_does_not_ask_again(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    # en, de, fr share rev_ids; dewiki-damaging is not deployed.
    rows = [(wiki, rev) for rev in range(1, 61) for wiki in ("enwiki", "dewiki", "frwiki")]
    inp = lake_table(tmp_path / "lake.parquet", rows)
    out = tmp_path / "out.parquet"
    options: dict[str, Any] = {
        "models": ["{wiki}-damaging"],
        "wiki_column": "wiki_db",
        "id_column": "revision_id",
        "pacing": Pacing(concurrency=1),
    }
    with emulator(undeployed=frozenset({"dewiki-damaging"})) as (emu, base_url):
        with pytest.raises(Interrupted):
            await run(inp, out, base_url, stop_after=30, **options)
        assert journal_dir(out).is_dir()
        assert emu.stats.by_model["dewiki-damaging"] == 1
        report = await run(inp, out, base_url, **options)
    # One request learned that dewiki has no damaging model, across both runs.
    assert emu.stats.by_model["dewiki-damaging"] == 1
    assert emu.stats.by_model["enwiki-damaging"] == 60
    assert emu.stats.by_model["frwiki-damaging"] == 60
    got = cells(out, "{wiki}-damaging")
    assert sorted(got) == sorted(rows)
    for (wiki, rev), cell in got.items():
        if wiki == "dewiki":
            assert cell["error"] == "model_not_deployed", (wiki, rev)
        else:
            # Each wiki's own model answered: the emulator's score for that model.
            assert cell["error"] is None, (wiki, rev)
            p_true = emulated_p_true(f"{wiki}-damaging", rev)
            assert dict(cell["probability"])["true"] == p_true
            assert cell["prediction"] is (p_true > 0.5)
    assert report.rows_written == 180


def script_scorer(
    models: list[str],
    script: Script,
    clock: FakeClock,
    *,
    lang: str = "en",
    pacing: Pacing | None = None,
) -> Scorer:
    return Scorer(
        models,
        rate=FAST,
        lang=lang,
        connection=Connection(
            endpoint=Endpoint(base_url="http://127.0.0.1:9"), transport=script.transport
        ),
        pacing=replace(pacing or Pacing(), clock=clock, sleep=clock.sleep),
    )


def paths(script: Script) -> list[str]:
    return [r.url.path.rsplit("/", 1)[1].removesuffix(":predict") for _, r in script.requests]


async def test_without_a_wiki_column_a_template_is_the_model_of_langs_wikipedia(
    fake_clock: FakeClock,
) -> None:
    script = Script(lambda r, n: ok(r), fake_clock)
    async with script_scorer(["{wiki}-damaging"], script, fake_clock, lang="de") as scorer:
        rows = [row async for row in scorer.score([5, 6])]
    assert sorted(paths(script)) == ["dewiki-damaging", "dewiki-damaging"]
    assert sorted(row.key for row in rows) == [RowKey("", 5), RowKey("", 6)]  # type: ignore[type-var]
    assert all(row.scores["{wiki}-damaging"].ok for row in rows)


async def test_a_model_that_cannot_score_a_rows_wiki_answers_without_a_request(
    fake_clock: FakeClock,
) -> None:
    table = wikis()
    en, de = table.from_dbname("enwiki"), table.from_dbname("dewiki")
    books, wikidata = table.from_dbname("eswikibooks"), table.from_dbname("wikidatawiki")
    items = [
        Revision(1, en, "enwiki", page_id=10),
        Revision(2, de, "dewiki", page_id=20),
        Revision(3, books, "eswikibooks"),
        Revision(4, wikidata, "wikidatawiki"),
    ]
    models = [
        "enwiki-damaging",
        "revertrisk-language-agnostic",
        "revertrisk-wikidata",
        "outlink-topic-model",
        "{wiki}-articlequality",
    ]
    script = Script(lambda r, n: ok(r), fake_clock)
    async with script_scorer(models, script, fake_clock, pacing=Pacing(linger=0.01)) as scorer:
        rows = {row.key: row.scores async for row in scorer.score(items)}
    errors = {
        (key.wiki, model): (score.error.value if score.error else None, score.error_message)
        for key, scores in rows.items()
        if key is not None
        for model, score in scores.items()
    }
    refused = {k: v for k, v in errors.items() if v[0] is not None}
    assert refused == {
        ("dewiki", "enwiki-damaging"): (
            "unsupported_wiki",
            "enwiki-damaging scores enwiki revisions, not dewiki ones",
        ),
        ("eswikibooks", "enwiki-damaging"): (
            "unsupported_wiki",
            "enwiki-damaging scores enwiki revisions, not eswikibooks ones",
        ),
        ("wikidatawiki", "enwiki-damaging"): (
            "unsupported_wiki",
            "enwiki-damaging scores enwiki revisions, not wikidatawiki ones",
        ),
        ("eswikibooks", "revertrisk-language-agnostic"): (
            "unsupported_wiki",
            "revertrisk-language-agnostic scores Wikipedia revisions; eswikibooks is not a "
            "Wikipedia",
        ),
        ("wikidatawiki", "revertrisk-language-agnostic"): (
            "unsupported_wiki",
            "revertrisk-language-agnostic scores Wikipedia revisions; wikidatawiki is not a "
            "Wikipedia",
        ),
        ("enwiki", "revertrisk-wikidata"): (
            "unsupported_wiki",
            "revertrisk-wikidata scores Wikidata revisions, not enwiki ones",
        ),
        ("dewiki", "revertrisk-wikidata"): (
            "unsupported_wiki",
            "revertrisk-wikidata scores Wikidata revisions, not dewiki ones",
        ),
        ("eswikibooks", "revertrisk-wikidata"): (
            "unsupported_wiki",
            "revertrisk-wikidata scores Wikidata revisions, not eswikibooks ones",
        ),
        ("eswikibooks", "outlink-topic-model"): (
            "unsupported_wiki",
            "outlink-topic-model scores Wikipedia revisions; eswikibooks is not a Wikipedia",
        ),
        ("wikidatawiki", "outlink-topic-model"): (
            "unsupported_wiki",
            "outlink-topic-model scores Wikipedia revisions; wikidatawiki is not a Wikipedia",
        ),
        ("eswikibooks", "{wiki}-articlequality"): (
            "unsupported_wiki",
            "{wiki}-articlequality: eswikibooks has no articlequality model",
        ),
    }
    # Exactly the rest went out, each to the right model.
    assert sorted(paths(script)) == sorted(
        [
            "enwiki-damaging",
            "revertrisk-language-agnostic",  # en and de: one request each (one wiki a batch)
            "revertrisk-language-agnostic",
            "revertrisk-wikidata",
            "outlink-topic-model",
            "outlink-topic-model",
            "enwiki-articlequality",
            "dewiki-articlequality",
            "wikidatawiki-articlequality",
        ]
    )


async def test_outlink_topic_model_needs_the_page_id(fake_clock: FakeClock) -> None:
    script = Script(lambda r, n: ok(r), fake_clock)
    async with script_scorer(["outlink-topic-model"], script, fake_clock) as scorer:
        [row] = [row async for row in scorer.score([8])]
    assert script.requests == []
    assert row.scores["outlink-topic-model"] == Score.failed(
        ErrorType.UNSCORABLE,
        "outlink-topic-model needs the revision's page_id or page_title, and this row has neither",
    )


def test_the_same_rev_id_on_two_wikis_is_two_rows_each_scored_for_its_wiki(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # The example: before, the dewiki row was dropped as a duplicate.
    inp = tmp_path / "in.csv"
    inp.write_text("rev_id,lang\n12345,en\n12345,de\n12345,en\n777,yue\n777,zh-yue\n")
    out = tmp_path / "out.parquet"
    model = "revertrisk-language-agnostic"
    with emulator() as (emu, base_url):
        code = main(["score", str(inp), "-o", str(out), "-m", model, "--base-url", base_url, "-q"])
        assert code == 0, capsys.readouterr().err
        # One request per wiki (a batch holds one language), nothing asked twice.
        assert emu.stats.requests == 3
        assert sorted(emu.stats.answered.items()) == [
            ((model, "dewiki", 12345), 1),
            ((model, "enwiki", 12345), 1),
            ((model, "zh_yuewiki", 777), 1),
        ]
    table = pq.read_table(out)
    assert table.column_names == ["lang", "rev_id", model]
    got = {(r["lang"], r["rev_id"]): r[model] for r in table.to_pylist()}
    assert sorted(got) == [("de", 12345), ("en", 12345), ("yue", 777)]
    for (lang, rev), wiki in [
        (("en", 12345), "enwiki"),
        (("de", 12345), "dewiki"),
        (("yue", 777), "zh_yuewiki"),
    ]:
        p_true = emulated_p_true(model, rev, wiki=wiki)
        assert got[(lang, rev)]["probability"] == [
            ("true", p_true),
            ("false", round(1 - p_true, 4)),
        ]
    assert got[("en", 12345)] != got[("de", 12345)]


async def test_a_data_lake_table_with_a_template_and_revertrisk(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    rows = [
        ("enwiki", 1001),
        ("dewiki", 1001),
        ("zh_yuewiki", 1001),
        ("simplewiki", 1002),
        ("be_x_oldwiki", 1003),
        ("eswikibooks", 1004),  # deployed outside Wikipedia: damaging, not revertrisk
        ("eswikiquote", 1005),
        ("enwiktionary", 1006),
        ("enwiki", 1001),  # a repeat: one row
    ]
    inp = lake_table(tmp_path / "lake.parquet", rows)
    out = tmp_path / "out.parquet"
    models = ["{wiki}-damaging", "revertrisk-language-agnostic"]
    with emulator() as (emu, base_url):
        report = await run(
            inp,
            out,
            base_url,
            models=models,
            wiki_column="wiki_db",
            id_column="revision_id",
        )
        answered = dict(emu.stats.answered)
    damaging = cells(out, "{wiki}-damaging")
    revertrisk = cells(out, "revertrisk-language-agnostic")
    assert sorted(damaging) == sorted(set(rows))
    for wiki, rev in set(rows):
        p_true = emulated_p_true(f"{wiki}-damaging", rev)
        assert damaging[(wiki, rev)]["error"] is None
        assert damaging[(wiki, rev)]["probability"] == [
            ("false", round(1 - p_true, 4)),
            ("true", p_true),
        ]
        if wiki in ("eswikibooks", "eswikiquote", "enwiktionary"):
            assert revertrisk[(wiki, rev)]["error"] == "unsupported_wiki"
        else:
            p_true = emulated_p_true("revertrisk-language-agnostic", rev, wiki=wiki)
            assert revertrisk[(wiki, rev)]["probability"] == [
                ("true", p_true),
                ("false", round(1 - p_true, 4)),
            ]
    # Each (model, wiki, rev_id) once; revertrisk was never asked for the other projects.
    assert set(answered.values()) == {1}
    assert {key for key in answered if key[0] == "revertrisk-language-agnostic"} == {
        ("revertrisk-language-agnostic", wiki, rev)
        for wiki, rev in set(rows)
        if wiki.endswith("wiki") and wiki != "enwiktionary"
    }
    assert report.rows_written == 8 and report.duplicate_rows == 1


async def test_missing_revisions_behind_a_500_are_final_on_this_run_and_the_rerun(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    # revertrisk-wikidata scores the Wikidata rows, articlequality the enwiki ones.
    missing = frozenset({5001, 5003})
    rows = [(wiki, rev) for wiki in ("wikidatawiki", "enwiki") for rev in range(5000, 5006)]
    inp = lake_table(tmp_path / "lake.parquet", rows)
    out = tmp_path / "out.parquet"
    options: dict[str, Any] = {
        "models": ["revertrisk-wikidata", "articlequality"],
        "wiki_column": "wiki_db",
        "id_column": "revision_id",
    }
    with emulator(missing=missing) as (emu, base_url):
        await run(inp, out, base_url, **options)
        first = dict(emu.stats.by_status)
        await run(inp, out, base_url, **options)
        assert dict(emu.stats.by_status) == first  # the rerun asks nothing
    # One request each: a 500 that says the revision cannot be fetched is not retried.
    assert first == {"200": 8, "500": 4}
    for model, wiki in (("revertrisk-wikidata", "wikidatawiki"), ("articlequality", "enwiki")):
        got = cells(out, model)
        for rev in range(5000, 5006):
            expected = "not_found" if rev in missing else None
            assert got[(wiki, rev)]["error"] == expected, (model, wiki, rev)


async def test_an_unsupported_language_costs_only_the_requests_in_flight_when_it_is_said(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    # The emulated readability does not serve Volapuk (vo), as the real one answers 400
    # "Unsupported lang: vo." for each language it lacks.
    langs = ["vo"] * 60 + ["en"] * 10
    inp = write_parquet(
        tmp_path / "in.parquet",
        {"rev_id": pa.array(range(7000, 7070), pa.int64()), "lang": langs},
    )
    out = tmp_path / "out.parquet"
    in_flight = 4
    with emulator(latency=Latency("fixed", 0.02)) as (emu, base_url):
        await run(inp, out, base_url, models=["readability"], pacing=Pacing(concurrency=in_flight))
        refused = emu.stats.by_status["400"]
    # At most the requests already on the wire when the first refusal came back.
    assert 1 <= refused <= in_flight
    assert emu.stats.by_status["200"] == 10
    got = {(r["lang"], r["rev_id"]): r["readability"] for r in pq.read_table(out).to_pylist()}
    messages = {got[("vo", rev)]["error_message"] for rev in range(7000, 7060)}
    assert {got[("vo", rev)]["error"] for rev in range(7000, 7060)} == {"unsupported_wiki"}
    # The server's words, for the rows it answered and the rows it was never asked.
    assert messages == {"Unsupported lang: vo."}
    assert all(got[("en", rev)]["error"] is None for rev in range(7060, 7070))


def test_a_revision_built_with_a_wiki_is_keyed_by_it() -> None:
    en, de = wikis().from_dbname("enwiki"), wikis().from_lang("de")
    assert Revision(12345, en).key == RowKey("enwiki", 12345)
    assert Revision(12345, de).key == RowKey("dewiki", 12345)
    assert Revision(12345, de, "de").key == RowKey("de", 12345)  # a lang column's value
    assert Revision(12345, de, "").key == RowKey("", 12345)  # the input's one wiki
    with pytest.raises(TypeError, match=r"Revision.wiki must be a Wiki, not 'enwiki'"):
        Revision(1, "enwiki")  # type: ignore[arg-type]


async def test_two_revisions_of_one_id_on_two_wikis_stay_two_rows_in_a_scorer(
    fake_clock: FakeClock,
) -> None:
    en, de = wikis().from_dbname("enwiki"), wikis().from_dbname("dewiki")
    script = Script(lambda r, n: ok(r), fake_clock)
    model = "revertrisk-language-agnostic"
    async with script_scorer([model], script, fake_clock, pacing=Pacing(linger=0.01)) as scorer:
        rows = [row async for row in scorer.score([Revision(7, en), Revision(7, de)])]
    assert sorted(row.key for row in rows) == [RowKey("dewiki", 7), RowKey("enwiki", 7)]  # type: ignore[type-var]
    assert len(script.requests) == 2  # one batch per language


def test_outlink_without_a_page_id_column_is_refused_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2], pa.int64())})
    out = tmp_path / "out.parquet"
    args = ["score", str(inp), "-o", str(out), "-m", "outlink-topic-model"]
    code = main([*args, "--base-url", "http://unused.invalid"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"lwbatch: error: {inp}: outlink-topic-model needs a page_id or page_title column "
        "beside the rev_id (its server takes the page with the revision)\n"
    )
    assert not out.exists()


def test_a_kind_only_wikidata_has_is_named_as_such() -> None:
    with pytest.raises(UsageError) as info:
        default_catalog().resolve("{wiki}-itemquality")
    assert str(info.value) == (
        "model '{wiki}-itemquality': this kind exists for Wikidata only; "
        "name it 'wikidatawiki-itemquality'"
    )


async def test_any_spelling_of_one_lang_is_one_run(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2, 3], pa.int64())})
    out = tmp_path / "out.parquet"
    with emulator() as (emu, base_url):
        await run(inp, out, base_url, models=["readability"], lang="enwiki")
        first = emu.stats.requests
        report = await run(inp, out, base_url, models=["readability"], lang=" en")
    assert (first, emu.stats.requests) == (3, 3)  # the rerun resumed the finished run
    assert report.rows_resumed == 3


async def test_a_finished_outlink_run_with_rows_lacking_a_page_id_reruns_for_nothing(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    pages = [11, None, 13, None, 15]
    inp = write_parquet(
        tmp_path / "in.parquet",
        {"rev_id": pa.array(range(1, 6), pa.int64()), "page_id": pa.array(pages, pa.int64())},
    )
    out = tmp_path / "out.parquet"
    options: dict[str, Any] = {"models": ["outlink-topic-model", "enwiki-damaging"]}
    with emulator() as (emu, base_url):
        await run(inp, out, base_url, **options)
        first = emu.stats.requests
        report = await run(inp, out, base_url, **options)
    assert (first, emu.stats.requests) == (3 + 5, 3 + 5)
    assert report.rows_resumed == 5 and report.rows_written == 5
    got = {r["rev_id"]: r for r in pq.read_table(out).to_pylist()}
    assert [got[rev]["outlink-topic-model"]["error"] for rev in range(1, 6)] == [
        None,
        "unscorable",
        None,
        "unscorable",
        None,
    ]
    assert all(got[rev]["enwiki-damaging"]["error"] is None for rev in range(1, 6))


async def test_a_template_whose_every_wiki_answers_404_aborts_the_run(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    rows = [(wiki, rev) for rev in range(1, 41) for wiki in ("enwiki", "dewiki")]
    inp = lake_table(tmp_path / "lake.parquet", rows)
    undeployed = frozenset({"enwiki-damaging", "dewiki-damaging"})
    with emulator(undeployed=undeployed) as (emu, base_url):
        with pytest.raises(NoModelDeployedError):
            await run(
                inp,
                tmp_path / "out.parquet",
                base_url,
                models=["{wiki}-damaging"],
                wiki_column="wiki_db",
                id_column="revision_id",
                pacing=Pacing(concurrency=2),
            )
        # One 404 per wiki's model, and the ones already on the wire.
        assert emu.stats.by_status == {"404": emu.stats.requests}
        assert emu.stats.requests <= 2 + 2
    assert not (tmp_path / "out.parquet").exists()


async def test_a_rerun_does_not_ask_again_for_a_language_the_model_refused(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    langs = ["vo", "en"] * 40
    inp = write_parquet(
        tmp_path / "in.parquet",
        {"rev_id": pa.array(range(1, 81), pa.int64()), "lang": langs},
    )
    out = tmp_path / "out.parquet"
    options: dict[str, Any] = {"models": ["readability"], "pacing": Pacing(concurrency=1)}
    with emulator(latency=Latency("fixed", 0.005)) as (emu, base_url):
        with pytest.raises(Interrupted):
            await run(inp, out, base_url, stop_after=10, **options)
        assert emu.stats.by_status["400"] == 1
        await run(inp, out, base_url, **options)
        # The refusal came back from the journal: not one more request for vo.
        assert emu.stats.by_status["400"] == 1
        assert emu.stats.by_status["200"] == 40
    got = cells_by_lang(out, "readability")
    assert {got[("vo", rev)]["error"] for rev in range(1, 81, 2)} == {"unsupported_wiki"}
    assert {got[("en", rev)]["error"] for rev in range(2, 81, 2)} == {None}


def cells_by_lang(path: Path, model: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["lang"], r["rev_id"]): r[model] for r in pq.read_table(path).to_pylist()}


def test_the_cli_names_flags_in_the_rows_it_could_not_send(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.csv"
    inp.write_text("rev_id,lang\n1,wikidatawiki\n2,en\n")
    out = tmp_path / "out.parquet"
    with emulator() as (_, base_url):
        code = main(
            ["score", str(inp), "-o", str(out), "-m", "readability", "--base-url", base_url]
        )
    err = capsys.readouterr().err
    assert code == 0, err
    why = (
        "row 1: lang 'wikidatawiki' is the database name of a wiki that is not a Wikipedia; "
        "name a column of database names with --wiki-column"
    )
    assert f"lwbatch: WARNING: 1 row of {inp} cannot be sent (first: {why})" in err
    assert f"invalid rows               1   first: {why}" in err


async def test_models_of_several_wikis_on_rows_that_name_none_are_warned_about(
    tmp_path: Path, emulator: EmulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2], pa.int64())})
    with emulator() as (_, base_url):
        await run(inp, tmp_path / "a.parquet", base_url, models=["enwiki-damaging", "readability"])
        assert not caplog.records  # one wiki: enwiki, and readability sent lang "en"
        await run(
            inp,
            tmp_path / "b.parquet",
            base_url,
            models=["eswikibooks-damaging", "readability", "revertrisk-wikidata"],
        )
    assert [r.getMessage() for r in caplog.records] == [
        f"{inp} names no wiki per row, and the models take each rev_id as a revision of "
        "another wiki (eswikibooks for eswikibooks-damaging, enwiki for readability, "
        "wikidatawiki for revertrisk-wikidata): if the rows are of one wiki, give `lang` or "
        "name a wiki column with `wiki_column`"
    ]


def test_a_data_lake_table_without_wiki_column_is_keyed_by_its_wiki_db(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = lake_table(tmp_path / "lake.parquet", [("enwiki", 424242), ("dewiki", 424242)])
    out = tmp_path / "out.parquet"
    with emulator() as (emu, base_url):
        code = main(
            ["score", str(inp), "-o", str(out), "-m", "{wiki}-damaging", "--id-column",
             "revision_id", "--endpoint", base_url, "--rate", "100/s"]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert (
        f"lwbatch: INFO: {inp}: rows are keyed by their wiki_db column of wiki database "
        "names (and rev_id)"
    ) in err
    # Two revisions, each asked of its own wiki's model: not merged, not both enwiki's.
    assert sorted(emu.stats.answered) == [
        ("dewiki-damaging", "dewiki", 424242),
        ("enwiki-damaging", "enwiki", 424242),
    ]
    assert sorted(cells(out, "{wiki}-damaging")) == [("dewiki", 424242), ("enwiki", 424242)]


def test_a_table_with_both_a_lang_and_a_wiki_db_column_must_say_which(tmp_path: Path) -> None:
    from lwbatch.errors import InputError
    from lwbatch.io.inputs import open_source

    both = write_parquet(
        tmp_path / "both.parquet",
        {"rev_id": pa.array([1], pa.int64()), "lang": ["de"], "wiki_db": ["enwiki"]},
    )
    with pytest.raises(InputError) as refused:
        open_source(both)
    assert str(refused.value) == (
        f"{both}: has both a 'lang' and a 'wiki_db' column: say which names each row's wiki "
        "(`wiki_column` 'wiki_db' for database names; without it a 'lang' column alone is "
        "read as language codes)"
    )
    source = open_source(both, wiki_column="wiki_db")
    assert source.key_layout.wiki_column == "wiki_db"
