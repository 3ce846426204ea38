"""End to end against the emulator, which answers as the model servers' newest source
does: missing and suppressed revisions, a poison revision in every revertrisk batch,
articlequality over a wiki outside its feature table and over missing revisions.

Every expected label and request count is worked out here by hand from the input.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Budget, Endpoint, RetryPolicy, score_file
from lwbatch.errors import Interrupted
from lwbatch.protocol.catalog import default_catalog
from lwbatch.settings import Connection, Files, Pacing
from tests.conftest import EmulatorFactory, write_parquet

RR = "revertrisk-language-agnostic"
# Quick backoffs: the counts, not the waits, are under test.
FAST = RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.005)


def cells(path: Path, model: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["lang"], r["rev_id"]): r[model] for r in pq.read_table(path).to_pylist()}


def run(
    inp: Path,
    out: Path,
    base_url: str,
    *,
    connection: Connection | None = None,
    pacing: Pacing | None = None,
    **options: Any,
) -> Any:
    return score_file(
        inp,
        out,
        rate=Budget.unlimited(),
        connection=replace(connection or Connection(), endpoint=Endpoint(base_url=base_url)),
        pacing=replace(pacing or Pacing(), retry=FAST),
        **options,
    )


def test_revertrisk_with_missing_suppressed_and_a_poison_revision_per_batch(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    # 200 English revisions, 10 batches of 20 consecutive ones: in each, rev 20k+3 is
    # missing, 20k+13 suppressed (a tenth in all) and 20k+7 poison (fetching it raises,
    # so the server answers 500 for the whole batch).
    revs = list(range(1, 201))
    inp = write_parquet(
        tmp_path / "in.parquet", {"rev_id": pa.array(revs, pa.int64()), "lang": ["en"] * 200}
    )
    problems = {
        **{r: "missing" for r in revs if r % 20 == 3},
        **{r: "deleted" for r in revs if r % 20 == 13},
        **{r: "poison" for r in revs if r % 20 == 7},
    }
    with emulator(problems=problems) as (emu, base_url):
        report = run(
            inp, tmp_path / "a.parquet", base_url, models=[RR], files=Files(cache=tmp_path / "c")
        )
        first = emu.stats.requests
        statuses = dict(emu.stats.by_status)
        rerun = run(
            inp, tmp_path / "b.parquet", base_url, models=[RR], files=Files(cache=tmp_path / "c")
        )
        second = emu.stats.requests - first
    got = cells(tmp_path / "a.parquet", RR)
    labels = Counter(cell["error"] for cell in got.values())
    assert labels == {None: 170, "not_found": 10, "deleted": 10, "transient_error": 10}
    for (_, rev), cell in got.items():
        expected = {3: "not_found", 13: "deleted", 7: "transient_error"}.get(rev % 20)
        assert cell["error"] == expected, rev
    # Per batch: 3 attempts, then halves down to the poison one (index 6):
    # [0-9] [10-19], [0-4] [5-9], [5,6] [7-9], [5] [6]: 8 requests. Before the first
    # failed batch was split nothing of en had answered: it split as the probe, and
    # the others waited for it.
    assert first == report.requests_sent == 10 * (3 + 8)
    assert statuses == {"500": 10 * 3 + 10 * 4, "200": 10 * 4}
    # The cache kept every answer about a revision; the poison ones it may not keep are
    # asked again, together: one batch of 10, its 3 attempts, and a probe down its first
    # half ([5], [2], [1] and [1]) that meets no answer (all are poison): 3 + 4.
    assert second == rerun.requests_sent == 3 + 4
    assert rerun.cached_per_model == {RR: 190}
    again = cells(tmp_path / "b.parquet", RR)
    assert {k: c for k, c in again.items() if c["error"] != "transient_error"} == {
        k: c for k, c in got.items() if c["error"] != "transient_error"
    }
    assert sorted(k for k, c in again.items() if c["error"] == "transient_error") == sorted(
        k for k, c in got.items() if c["error"] == "transient_error"
    )


def test_articlequality_outside_its_feature_table_sends_nothing(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    # annwiki is an open Wikipedia that articlequality's feature table lacks.
    inp = write_parquet(
        tmp_path / "in.parquet",
        {"rev_id": pa.array(range(1, 41), pa.int64()), "lang": ["ann"] * 30 + ["en"] * 10},
    )
    with emulator() as (emu, base_url):
        report = run(inp, tmp_path / "out.parquet", base_url, models=["articlequality"])
        assert emu.stats.requests == report.requests_sent == 10
    got = cells(tmp_path / "out.parquet", "articlequality")
    assert Counter(c["error"] for c in got.values()) == {None: 10, "unsupported_wiki": 30}
    assert got[("ann", 1)]["error_message"] == (
        "articlequality does not score annwiki: it is not in the server's list (333 wikis "
        "(src/models/articlequality/data/feature_values.tsv at 67a4ca9725, 2024-08-01))"
    )


def test_the_safety_net_alone_gives_up_on_a_failing_wiki(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    # Without the list (as if lwbatch's copy were out of date), the server's own answer:
    # 500 "KeyError : 'ann'" for every annwiki revision. After 3 revisions have used up
    # their 3 attempts each, the rest of annwiki is not sent; at 4 in flight, at most 3
    # other revisions had attempts of their own when that happened.
    inp = write_parquet(
        tmp_path / "in.parquet",
        {"rev_id": pa.array(range(1, 61), pa.int64()), "lang": ["ann"] * 50 + ["en"] * 10},
    )
    out = tmp_path / "out.parquet"
    options: dict[str, Any] = {
        "models": ["articlequality"],
        "connection": Connection(catalog=default_catalog().without_coverage()),
        "pacing": Pacing(concurrency=4),
        "files": Files(cache=tmp_path / "c"),
    }
    with emulator() as (emu, base_url):
        report = run(inp, out, base_url, **options)
        sent_to_ann = emu.stats.by_status["500"]
        assert 3 * 3 <= sent_to_ann <= 3 * 3 + 3 * 3
        assert emu.stats.by_status["200"] == 10
        got = cells(out, "articlequality")
        labels = Counter(c["error"] for c in got.values())
        assert labels[None] == 10 and labels["transient_error"] >= 3
        assert labels["transient_error"] + labels["server_error"] == 50
        assert labels["server_error"] >= 50 - 3 - 3
        given_up = next(c for c in got.values() if c["error"] == "server_error")
        assert given_up["error_message"].startswith(
            "articlequality answered 500 \"KeyError : 'ann'\" to 3 requests for annwiki in a row"
        )
        assert report.requests_sent == sent_to_ann + 10
        # Not a fact about the revisions: asked again by a rerun of the same output,
        # which gives up after the same 3 revisions' attempts at most ...
        before = emu.stats.requests
        again = run(inp, out, base_url, **options)
        assert again.requests_sent == emu.stats.requests - before
        assert 3 * 3 <= again.requests_sent <= 3 * 3 + 3 * 3
        # ... and never cached: another output asks the cache for annwiki in vain.
        before = emu.stats.requests
        other = run(inp, tmp_path / "other.parquet", base_url, **options)
        assert other.cached_per_model == {"articlequality": 10}
        assert 3 * 3 <= emu.stats.requests - before <= 3 * 3 + 3 * 3


def test_articlequality_missing_revisions_cost_one_request_each(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(range(1, 11), pa.int64())})
    out = tmp_path / "out.parquet"
    with emulator(missing=frozenset({2, 4, 6, 8}), deleted=frozenset({9})) as (emu, base_url):
        report = run(inp, out, base_url, models=["articlequality"])
        assert emu.stats.requests == report.requests_sent == 10
        got = {r["rev_id"]: r["articlequality"] for r in pq.read_table(out).to_pylist()}
        assert [got[r]["error"] for r in range(1, 11)] == [
            None,
            "not_found",
            None,
            "not_found",
            None,
            "not_found",
            None,
            "not_found",
            "deleted",
            None,
        ]
        assert got[2]["error_message"] == (
            "[404] Fetching html failed for the article revision with id: 2. Reason: Not Found"
        )
        # Final: a rerun of the finished output asks nothing.
        rerun = run(inp, out, base_url, models=["articlequality"])
        assert rerun.requests_sent == 0 and emu.stats.requests == 10


def test_ignore_coverage_on_the_command_line(
    tmp_path: Path, emulator: EmulatorFactory, capsys: Any
) -> None:
    from lwbatch.cli import main

    inp = write_parquet(
        tmp_path / "in.parquet",
        {"rev_id": pa.array(range(1, 5), pa.int64()), "lang": ["ann", "ann", "en", "en"]},
    )
    assert main(["plan", str(inp), "-m", "articlequality", "--json"]) == 0
    assert '"answered_without_request":{"articlequality":2}' in capsys.readouterr().out
    assert main(["plan", str(inp), "-m", "articlequality", "--ignore-coverage", "--json"]) == 0
    assert '"requests":{"articlequality":4}' in capsys.readouterr().out
    with emulator() as (emu, base_url):
        args = ["-m", "articlequality", "--base-url", base_url, "--rate", "unlimited", "-q"]
        out = tmp_path / "out.parquet"
        assert main(["score", str(inp), "-o", str(out), *args, "--ignore-coverage"]) == 0
        # Sent: the server's own answer for annwiki (its KeyError, retried).
        assert emu.stats.by_status["500"] == 2 * 5 and emu.stats.by_status["200"] == 2


async def test_a_rerun_with_coverage_ignored_sends_what_the_list_refused(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    from tests.conftest import score_until

    # An interrupted run refused annwiki from the list; the rerun ignores the list: the
    # annwiki rows it has still to do are sent, not refused in the server's name.
    rows = 60
    inp = write_parquet(
        tmp_path / "in.parquet",
        {
            "rev_id": pa.array(range(1, rows + 1), pa.int64()),
            "lang": ["en", "ann"] * (rows // 2),
        },
    )
    out = tmp_path / "out.parquet"
    options: dict[str, Any] = {
        "models": ["articlequality"],
        "rate": Budget.unlimited(),
        "pacing": Pacing(concurrency=1, max_open=4),
        "files": Files(batch_rows=4),
    }
    with emulator() as (emu, base_url):
        with pytest.raises(Interrupted):
            await score_until(inp, out, base_url, stop_after=10, **options)
        assert emu.stats.by_status["500"] == 0
        await score_until(
            inp,
            out,
            base_url,
            connection=Connection(catalog=default_catalog().without_coverage()),
            **{**options, "pacing": Pacing(concurrency=1, max_open=4, retry=FAST)},
        )
        sent_to_ann = emu.stats.by_status["500"]
    got = cells(out, "articlequality")
    messages = {c["error_message"] for (lang, _), c in got.items() if lang == "ann"}
    assert not any("answered that it does not serve" in (m or "") for m in messages)
    assert sent_to_ann > 0
