"""Inputs that span wikis, end to end against the emulator: rows keyed by (wiki, rev_id),
`{wiki}-KIND` templates, and answers that hold for a whole (model, wiki)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Budget, Endpoint, Rate, Revision
from lwbatch.durability.journal import journal_dir
from lwbatch.engine.scorer import Scorer
from lwbatch.errors import Interrupted
from lwbatch.keys import RowKey
from lwbatch.results import ErrorType, Score
from lwbatch.run import score_file_async
from lwbatch.seams import Source
from lwbatch.wikis import wikis
from tests.conftest import EmulatorFactory, FakeClock, Script, emulated_p_true, ok, write_parquet

FAST = Budget.from_rate(Rate(5000, 1.0))


async def run(
    inp: Path, out: Path, base_url: str, *, stop_after: int | None = None, **options: Any
) -> Any:
    """score_file_async, optionally stopped (as by Ctrl-C) after `stop_after` rows."""
    scorers: list[Scorer] = []
    stoppers: list[asyncio.Task[None]] = []

    def started(_source: Source, scorer: Scorer) -> None:
        scorers.append(scorer)

    def progress(_n: int) -> None:
        scorer = scorers[0]
        if stop_after is not None and scorer.rows_emitted >= stop_after and not stoppers:
            stoppers.append(asyncio.get_running_loop().create_task(scorer.stop(5.0)))

    options.setdefault("budget", FAST)
    return await score_file_async(
        inp,
        out,
        endpoint=Endpoint(base_url=base_url),
        on_start=started,
        progress=progress,
        **options,
    )


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
        "concurrency": 1,
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


def script_scorer(models: list[str], script: Script, clock: FakeClock, **options: Any) -> Scorer:
    return Scorer(
        models,
        endpoint=Endpoint(base_url="http://127.0.0.1:9"),
        transport=script.transport,
        budget=FAST,
        clock=clock,
        sleep=clock.sleep,
        **options,
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
    async with script_scorer(models, script, fake_clock, linger=0.01) as scorer:
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
        ErrorType.INVALID_INPUT,
        "outlink-topic-model needs the page_id of each revision: add a page_id column",
    )
