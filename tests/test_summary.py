"""The summary: one scope per figure, said in its label (this run or the output; rows or
(row, model) cells), and shares of a shared budget that add up to at most 100%."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Budget, Rate
from lwbatch.engine.stats import RunReport, RunStats
from lwbatch.errors import Interrupted
from lwbatch.pacing.shared import Sharing
from lwbatch.settings import Pacing
from tests.conftest import EmulatorFactory, score_until, write_parquet

MODELS = ["enwiki-damaging", "enwiki-goodfaith", "revertrisk-language-agnostic"]
MISSING = 2_100_000_001  # above the emulator's largest rev_id: not_found


def revisions(tmp_path: Path) -> Path:
    # 30 revisions, one of them unknown, and 4 invalid rows (0, -1, null, -7).
    ids = [*range(1, 30), MISSING, 0, -1, None, -7]
    return write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(ids, pa.int64())})


def cells(path: Path) -> dict[str, tuple[int, int]]:
    """Per model: (scored cells, error cells but invalid_input) in the file, counted here."""
    rows = pq.read_table(path).to_pylist()
    return {
        m: (
            sum(r[m]["error"] is None for r in rows),
            sum(r[m]["error"] not in (None, "invalid_input") for r in rows),
        )
        for m in MODELS
    }


async def test_a_full_run_counts_invalid_rows_once_and_cells_per_model(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    out = tmp_path / "out.parquet"
    with emulator() as (_, base_url):
        report = await score_until(
            revisions(tmp_path), out, base_url, models=MODELS, rate=Budget.unlimited()
        )
    assert (report.output_rows, report.output_invalid_rows) == (34, 4)
    assert cells(out) == dict.fromkeys(MODELS, (29, 1))
    assert {
        m: (report.output_scored[m], sum(report.output_errors[m].values())) for m in MODELS
    } == (dict.fromkeys(MODELS, (29, 1)))
    text = report.render()
    assert "rows written                34   30 revisions, 4 invalid rows" in text
    # The errors line is of cells, and an invalid row is not three errors.
    assert "errors (cells in the output): not_found: 3" in text
    assert "invalid rows in the output: 4, each with invalid_input in every column" in text
    assert "invalid_input:" not in text  # never counted as (row, model) cells
    data = report.to_dict()
    assert data["invalid_rows"] == 4 and data["errors_by_type"] == {"not_found": 3}
    assert all("invalid_input" not in found for found in data["errors_per_model"].values())


async def test_after_a_resume_the_output_figures_are_the_files(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    out = tmp_path / "out.parquet"
    inp = revisions(tmp_path)
    with emulator() as (_, base_url):
        with pytest.raises(Interrupted):
            await score_until(
                inp, out, base_url, stop_after=12, models=MODELS, rate=Budget.unlimited(),
                pacing=Pacing(concurrency=1),
            )  # fmt: skip
        report = await score_until(inp, out, base_url, models=MODELS, rate=Budget.unlimited())
    assert report.rows_resumed > 0
    # Invalid rows the earlier run wrote are rows resumed, not revisions done.
    assert report.invalid_resumed == 4
    revisions_done = report.rows_resumed - report.invalid_resumed
    assert f"distinct revisions          30   {revisions_done:,} done by an earlier run" in (
        report.render()
    )
    in_file = cells(out)
    assert {m: report.output_scored[m] for m in MODELS} == {m: in_file[m][0] for m in MODELS}
    # This run answered fewer than the file holds: the earlier run's rows are resumed.
    assert all(report.scores_per_model[m] < report.output_scored[m] for m in MODELS)
    assert report.output_invalid_rows == 4 and report.output_rows == 34


def shared(granted: int, total: int, elapsed: float) -> RunReport:
    return RunReport.from_stats(
        RunStats(),
        models=("enwiki-damaging",),
        elapsed=elapsed,
        budget="100/1s",
        budget_rate=Budget.from_rate(Rate(100, 1.0)).rate,
        sharing=Sharing(path=Path("b.lwb"), others=1, granted=granted, total=total),
    )


def test_shares_of_a_shared_budget_are_of_what_it_allowed_and_add_up_to_at_most_all() -> None:
    # Two runs side by side for 20 s at 100/s: 2,000 allowed; one sent 1,010, the other
    # 970; each saw a few requests of the other outside its own span (1,965 and 1,990).
    first, second = shared(1010, 1965, 20.0), shared(970, 1990, 20.0)
    assert (first.budget_share, first.others_share) == (0.505, 0.4775)
    assert (second.budget_share, second.others_share) == (0.485, 0.51)
    assert first.budget_share + second.budget_share <= 1.0
    assert (
        "budget shared with           1   other run; of what the budget allowed while this "
        "run ran, it sent 50.5%, the others 47.8%"
    ) in first.render()
    # Never above all of it, whatever a short run's burst did.
    assert shared(150, 150, 1.0).budget_share == 1.0
    alone = RunReport.from_stats(
        RunStats(), models=("m",), elapsed=20.0, budget="100/1s", budget_rate=100.0
    )
    assert (alone.budget_share, alone.others_share) == (None, None)
    assert "budget shared" not in alone.render()
