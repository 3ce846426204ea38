"""lwbatch.spark end to end: a local SparkSession (local[2]) against the emulator on
127.0.0.1, under one job-wide budget. Skipped where pyspark is not installed."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Budget, Endpoint, Rate, score_file
from tests.conftest import EmulatorFactory, max_in_window, write_parquet

pyspark = pytest.importorskip("pyspark")
pytest.importorskip("pandas")

MODELS = ["{wiki}-damaging", "revertrisk-language-agnostic"]


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from pyspark.sql import SparkSession

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("lwbatch-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("warehouse")))
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    yield session
    session.stop()


def lake(path: Path) -> Path:
    rows = [(wiki, rev) for rev in range(1, 81) for wiki in ("enwiki", "dewiki", "frwiki")]
    rows += rows[:20]  # repeats, spread over the partitions
    return write_parquet(
        path,
        {
            "wiki_db": [w for w, _ in rows],
            "revision_id": pa.array([r for _, r in rows], pa.int64()),
        },
    )


def sorted_rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: (r["wiki_db"], r["rev_id"]))


def test_a_dataframe_scores_as_the_local_engine_inside_one_job_wide_budget(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory
) -> None:
    from lwbatch.spark import score

    inp = lake(tmp_path / "lake.parquet")
    with emulator() as (_, base_url):
        score_file(
            inp,
            tmp_path / "local.parquet",
            models=MODELS,
            wiki_column="wiki_db",
            id_column="revision_id",
            endpoint=Endpoint(base_url=base_url),
            budget=Budget.from_rate(Rate(5000, 1.0)),
        )
    local = pq.read_table(tmp_path / "local.parquet")

    budget = Rate(100, 1.0)
    with emulator(budget=budget) as (emu, base_url):
        df = spark.read.parquet(str(inp))
        scored = score(
            df,
            models=MODELS,
            rate="100/1s",
            wiki_col="wiki_db",
            id_col="revision_id",
            endpoint=Endpoint(base_url=base_url),
        )
        result = scored.toArrow()
        arrivals = sorted(emu.stats.arrivals)
        stats = emu.stats
    assert result.schema.names == local.schema.names
    assert sorted_rows(result) == sorted_rows(local)
    # Each (model, wiki, rev_id) asked once, and the job never went over its budget.
    assert max(stats.answered.values()) == 1
    assert "429" not in stats.by_status
    assert max_in_window(arrivals, budget.period) <= budget.requests


def test_speculation_is_refused_before_anything_is_planned() -> None:
    from types import SimpleNamespace

    from lwbatch.errors import UsageError
    from lwbatch.spark import score

    # spark.speculation is fixed when a context starts: a stand-in context that has it.
    conf = SimpleNamespace(
        get=lambda key, default=None: "true" if key == "spark.speculation" else default
    )
    context = SimpleNamespace(getConf=lambda: conf)
    df = SimpleNamespace(sparkSession=SimpleNamespace(sparkContext=context))
    with pytest.raises(UsageError) as info:
        score(df, models=["enwiki-damaging"], rate="10/1s")  # type: ignore[arg-type]
    assert str(info.value) == (
        "spark.speculation is true: a speculative copy of a task scores its partition "
        "again, paying every request twice; set spark.speculation=false for this job"
    )


def test_the_cli_scores_on_spark_and_prints_the_summary(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = lake(tmp_path / "lake.parquet")
    out = tmp_path / "scores"
    args = ["score", str(inp), "-o", str(out), "--engine", "spark", "--master", "local[2]"]
    args += ["--wiki-column", "wiki_db", "--id-column", "revision_id", "--rate", "500/1s"]
    args += [arg for m in MODELS for arg in ("-m", m)]
    with emulator() as (emu, base_url):
        code = main([*args, "--base-url", base_url, "--report", str(tmp_path / "r.json")])
        err = capsys.readouterr().err
        assert code == 0, err
        requests = emu.stats.requests
        damaging = sum(n for m, n in emu.stats.by_model.items() if m.endswith("-damaging"))
        assert main([*args, "--base-url", base_url]) == 2  # the output exists
    assert "--output" in capsys.readouterr().err
    table = pq.read_table(out)
    assert table.num_rows == 240 and table.schema.names[:2] == ["wiki_db", "rev_id"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["rows_read"], report["duplicate_rows"], report["rows_written"]) == (260, 20, 240)
    # The tasks' counts add up to what the emulator saw: 240 damaging requests, and
    # revertrisk batches of one wiki each (some partial: the wikis spread over partitions).
    assert report["requests_sent"] == requests and damaging == 240
    assert 12 <= requests - damaging <= 24
    assert report["scores_per_model"] == dict.fromkeys(MODELS, 240)
    assert "rows written               240" in err
    assert not list(tmp_path.glob(".scores.spark-*"))


def test_the_cli_reads_and_writes_tables(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    spark.read.parquet(str(lake(tmp_path / "lake.parquet"))).write.saveAsTable("lake_in")
    args = ["score", "--engine", "spark", "--input-table", "lake_in"]
    args += ["--output-table", "scores_out", "-m", "{wiki}-damaging", "--rate", "500/1s"]
    args += ["--wiki-column", "wiki_db", "--id-column", "revision_id", "-q"]
    with emulator() as (emu, base_url):
        code = main([*args, "--base-url", base_url])
        first = capsys.readouterr().err
        assert code == 0, first
        assert "250/1s per task" in first  # the share is logged
        assert emu.stats.requests == 240
        assert main([*args, "--base-url", base_url]) == 2
    assert capsys.readouterr().err == (
        "lwbatch: error: --output-table scores_out exists; pass --restart to replace it, "
        "or choose another table\n"
    )
    assert spark.table("scores_out").count() == 240


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "x.parquet"], "give INPUT or --input-table (one of them)"),
        (["in.parquet"], "give --output or --output-table (one of them)"),
        (
            ["in.parquet", "-o", "x", "--output-table", "t"],
            "give --output or --output-table (one of them)",
        ),
    ],
)
def test_the_spark_engine_needs_one_input_and_one_output(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    assert main(["score", "--engine", "spark", "-m", "enwiki-damaging", *args]) == 2
    assert capsys.readouterr().err == f"lwbatch: error: {message}\n"


def test_spark_options_are_refused_by_the_local_engine(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lwbatch.cli import main

    assert (
        main(["score", "in.parquet", "-o", "x.parquet", "-m", "enwiki-damaging", "--slots", "4"])
        == 2
    )
    assert capsys.readouterr().err == (
        "lwbatch: error: --master, --slots, --input-table and --output-table are for "
        "--engine spark\n"
    )
