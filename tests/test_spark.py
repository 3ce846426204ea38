"""lwbatch.spark end to end: a local SparkSession (local[2]) against the emulator on
127.0.0.1, under one job-wide budget. Skipped where pyspark is not installed."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Budget, Endpoint, Rate, score_file
from lwbatch.settings import Connection, Pacing
from tests.conftest import EmulatorFactory, max_in_window, write_parquet

# One SparkSession: the Spark tests share a worker when the suite runs in parallel.
pytestmark = pytest.mark.xdist_group("spark")

pyspark = pytest.importorskip("pyspark")
pytest.importorskip("pandas")

MODELS = ["{wiki}-damaging", "revertrisk-language-agnostic"]


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
            rate=Budget.from_rate(Rate(5000, 1.0)),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
        )
    local = pq.read_table(tmp_path / "local.parquet")

    # A 2-second window: a 1-second one leaves the gateway's count no room for the
    # arrival jitter of a loaded machine (one 429 in three runs under load).
    budget = Rate(200, 2.0)
    with emulator(budget=budget) as (emu, base_url):
        df = spark.read.parquet(str(inp))
        scored = score(
            df,
            models=MODELS,
            rate="200/2s",
            wiki_column="wiki_db",
            id_column="revision_id",
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
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


def test_a_local_master_whose_python_lacks_lwbatch_is_refused_before_anything_is_sent() -> None:
    from types import SimpleNamespace

    from lwbatch.errors import UsageError
    from lwbatch.spark import score

    conf = SimpleNamespace(get=lambda key, default=None: default)
    context = SimpleNamespace(
        getConf=lambda: conf, master="local[2]", pythonExec="/nonexistent/bin/python3"
    )
    df = SimpleNamespace(sparkSession=SimpleNamespace(sparkContext=context))
    with pytest.raises(UsageError) as info:
        score(df, models=["enwiki-damaging"], rate="10/1s")  # type: ignore[arg-type]
    assert str(info.value) == (
        "the executors' Python (/nonexistent/bin/python3) cannot import lwbatch and pyarrow: "
        f"set PYSPARK_PYTHON={sys.executable} before the SparkSession starts (or install "
        "lwbatch there)"
    )


def test_the_cli_scores_on_spark_and_prints_the_summary(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = lake(tmp_path / "lake.parquet")
    out = tmp_path / "scores"
    args = ["score", str(inp), "-o", out.as_uri(), "--engine", "spark", "--master", "local[2]"]
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
    assert report["requests_by_outcome"] == {"200": requests}
    assert "rows written               240" in err
    # The local engine's figures: latency per model (the tasks' histograms added up),
    # the peak in flight, the sending phase.
    assert sorted(report["latency_seconds"]) == sorted(MODELS)
    assert all(v["p50"] is not None for v in report["latency_seconds"].values())
    assert report["peak_in_flight"] >= 2  # two tasks, each with one or more in flight
    assert 0 < report["sending_seconds"] < report["elapsed_seconds"]
    assert not list(tmp_path.glob(".scores.lwbatch-*"))


def test_the_cli_reads_and_writes_tables(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    spark.read.parquet(str(lake(tmp_path / "lake.parquet"))).write.saveAsTable("lake_in")
    args = ["score", "--engine", "spark", "--input-table", "lake_in"]
    args += ["--output-table", "scores_out", "-m", "{wiki}-damaging", "--rate", "500/1s"]
    args += ["--progress", str(tmp_path / "progress")]
    args += ["--wiki-column", "wiki_db", "--id-column", "revision_id", "-q"]
    with emulator() as (emu, base_url):
        # Without -q, which hides info lines such as the share logged.
        code = main([a for a in args if a != "-q"] + ["--base-url", base_url])
        first = capsys.readouterr().err
        assert code == 0, first
        assert "per task 250/1s " in first
        assert emu.stats.requests == 240
        assert main([*args, "--base-url", base_url]) == 2
    assert capsys.readouterr().err == (
        "lwbatch: error: --output-table scores_out exists; pass --restart to replace it, "
        "or choose another table\n"
    )
    assert spark.table("scores_out").count() == 240
    # --restart replaces it only once the new one is written: a job that fails keeps it.
    gone = frozenset({"enwiki-damaging", "dewiki-damaging", "frwiki-damaging"})
    with emulator(undeployed=gone) as (_, base_url):
        assert main([*args, "--base-url", base_url, "--restart"]) == 1
    assert spark.table("scores_out").count() == 240
    with emulator() as (_, base_url):
        assert main([*args, "--base-url", base_url, "--restart"]) == 0
    assert spark.table("scores_out").count() == 240
    assert sorted(t.name for t in spark.catalog.listTables()) == ["lake_in", "scores_out"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "x.parquet"], "give INPUT or --input-table (one of them)"),
        (["in.parquet"], "give --output or --output-table (one of them)"),
        (
            ["in.parquet", "-o", "x", "--output-table", "t"],
            "give --output or --output-table (one of them)",
        ),
        (
            ["in.parquet", "-o", "x", "--grace", "5"],
            "--grace is for the local engine: Spark itself stops its tasks",
        ),
        (
            ["in.parquet", "-o", "x", "--no-retry-failed"],
            "--no-retry-failed is for the local engine: a Spark job's rerun asks failures "
            "of the service again by itself",
        ),
        (
            ["in.parquet", "-o", "x", "--no-shared-budget"],
            "--no-shared-budget is for the local engine: a Spark job splits its budget "
            "between its task slots",
        ),
        (
            ["in.parquet", "-o", "x", "--state-dir", "s"],
            "--state-dir is for the local engine: a Spark job splits its budget between its "
            "task slots",
        ),
        (["in.csv", "-o", "x"], "in.csv: --engine spark reads Parquet"),
        (["in.parquet", "-o", "in.parquet", "--restart"], "--output in.parquet is the input"),
        (["in.parquet", "-o", "no/such/dir/out"], "--output no/such/dir/out: its directory"),
        (
            ["--input-table", "t", "--output-table", "t", "--restart"],
            "--output-table t is the input table",
        ),
        (
            ["hdfs://namenode.invalid:8020/revs", "-o", "x"],
            "INPUT hdfs://namenode.invalid:8020/revs: cannot reach its file system: ",
        ),
    ],
)
def test_the_spark_engine_needs_one_input_and_one_output(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lwbatch.cli import main

    monkeypatch.chdir(tmp_path)
    write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1], pa.int64())})
    (tmp_path / "in.csv").write_text("rev_id\n1\n")
    assert main(["score", "--engine", "spark", "-m", "enwiki-damaging", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lwbatch: error: {message}") and err.count("\n") == 1


def test_spark_options_are_refused_by_the_local_engine(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lwbatch.cli import main

    assert (
        main(["score", "in.parquet", "-o", "x.parquet", "-m", "enwiki-damaging", "--slots", "4"])
        == 2
    )
    assert capsys.readouterr().err == (
        "lwbatch: error: --master, --slots, --input-table, --output-table, --progress, "
        "--commit-every and --spark-log are for --engine spark\n"
    )


def test_many_input_partitions_become_one_per_slot_and_the_shares_add_up_to_the_budget(
    spark: Any, emulator: EmulatorFactory
) -> None:
    from lwbatch.spark import score

    # 8 input partitions, 2 slots: 2 tasks, with shares of 41/s of 21/s and 20/s; two
    # shares of 21/s would go over 41 in some second.
    df = spark.createDataFrame([(rev,) for rev in range(1, 161)], ["rev_id"]).repartition(8)
    budget = Rate(41, 1.0)
    with emulator(budget=budget) as (emu, base_url):
        scored = score(
            df,
            models=["enwiki-damaging"],
            rate="41/1s",
            slots=2,
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
        )
        assert scored.rdd.getNumPartitions() == 2
        rows = scored.toArrow().to_pylist()
        arrivals = sorted(emu.stats.arrivals)
        statuses = dict(emu.stats.by_status)
    assert sorted(r["rev_id"] for r in rows) == list(range(1, 161))
    assert all(r["enwiki-damaging"]["error"] is None for r in rows)
    # Two processes' requests reach the server with their own delays: on a 1 s window
    # its count may see one more than the shares let out (a 429, retried), no more.
    assert statuses["200"] == 160 and statuses.get("429", 0) <= 1
    assert max_in_window(arrivals, 1.0) <= 42


def test_each_spelling_of_one_key_is_requested_once(spark: Any, emulator: EmulatorFactory) -> None:
    from pyspark.sql.types import StringType, StructField, StructType

    from lwbatch.spark import score

    # rev_id 2 of enwiki, written six ways, and rev_id 3 of dewiki written two ways;
    # " 2" and "enwiki" are not what the rows of the other partition hold.
    spellings = [
        ("2", "en"),
        ("002", None),
        (" 2", ""),
        ("2.0", "enwiki"),
        ("+2", " en "),
        ("\u00a02", "\ten"),
        ("2\t", "en\u00a0"),
        ("2", "en"),
        ("3", "de"),
        ("3", "dewiki"),
        ("x", "en"),
        ("4", "EN"),
    ]
    schema = StructType([StructField("rev_id", StringType()), StructField("lang", StringType())])
    df = spark.createDataFrame(spellings, schema).repartition(3)
    with emulator() as (emu, base_url):
        rows = (
            score(
                df,
                models=["revertrisk-language-agnostic"],
                rate="100/1s",
                slots=2,
                connection=Connection(endpoint=Endpoint(base_url=base_url)),
            )
            .toArrow()
            .to_pylist()
        )
        answered = dict(emu.stats.answered)
    model = "revertrisk-language-agnostic"
    assert answered == {(model, "enwiki", 2): 1, (model, "dewiki", 3): 1}
    got = sorted(
        ((r["lang"], r["rev_id"], r[model]["error"], r[model]["error_message"]) for r in rows),
        key=str,
    )
    assert got == sorted(
        [
            ("EN", 4, "invalid_input", "lang 'EN' must be lower case: 'en'"),
            ("de", 3, None, None),
            ("en", 2, None, None),
            ("en", None, "invalid_input", "rev_id 'x' is not an integer"),
        ],
        key=str,
    )


def test_a_failing_job_leaves_no_output_and_says_why_in_one_line(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2, 3], pa.int64())})
    out = tmp_path / "scores"
    out.mkdir()
    (out / "earlier.parquet").write_bytes(b"an earlier output")
    with emulator(undeployed=frozenset({"enwiki-damaging"})) as (_, base_url):
        code = main(
            ["score", str(inp), "-o", out.as_uri(), "--engine", "spark", "--rate", "100/1s"]
            + ["-m", "enwiki-damaging", "--base-url", base_url, "-q", "--restart"]
        )
    assert code == 1
    assert capsys.readouterr().err.splitlines()[-1] + "\n" == (
        "lwbatch: error: every requested model answered 404 (not deployed): enwiki-damaging; "
        "check the model names and the wikis they are deployed on\n"
    )
    # --restart replaces the old output only once a new one exists: it is kept as it was.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "scores"]
    assert [p.name for p in out.iterdir()] == ["earlier.parquet"]


def test_without_a_rate_the_tier_is_the_jobs_budget(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory
) -> None:
    from lwbatch.cli import main

    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([7, 8], pa.int64())})
    report_path = tmp_path / "r.json"
    with emulator() as (_, base_url):
        code = main(
            ["score", str(inp), "-o", str(tmp_path / "out"), "--engine", "spark", "-q"]
            + ["-m", "enwiki-damaging", "--base-url", base_url, "--tier", "authenticated"]
            + ["--report", str(report_path)]
        )
    assert code == 0
    report = json.loads(report_path.read_text())
    assert (report["budget"], report["rows_written"]) == ("100000/3600s and 100/1s", 2)


def _task(base_url: str, model: str = "enwiki-damaging") -> Any:
    from lwbatch.io.columns import Columns
    from lwbatch.spark import PartitionTask

    return PartitionTask(
        models=(model,),
        budget=Budget.unlimited(),
        slots=1,
        connection=Connection(endpoint=Endpoint(base_url=base_url), timeout=5.0),
        pacing=Pacing(concurrency=4, share=False),
        columns=Columns.decide(
            ["rev_id"], id_column="rev_id", wiki_column=None, keep_columns=None, where="x"
        ),
        lang="en",
        counters=None,
    )


def _rev_ids(n: int) -> Iterator[pa.RecordBatch]:
    yield pa.record_batch([pa.array(range(1, n + 1), pa.int64())], names=["rev_id"])


def test_a_task_whose_output_is_no_longer_read_stops_sending(emulator: EmulatorFactory) -> None:
    import threading

    # As Spark does after a limit(): it takes a first batch and closes the iterator.
    with emulator() as (emu, base_url):
        output = _task(base_url)(_rev_ids(5000))
        first = next(output)
        output.close()
        # Closing waits for the task's thread, which stops sending and ends.
        assert [t for t in threading.enumerate() if t.name == "lwbatch-spark-task-0"] == []
        sent = emu.stats.requests
    assert first.num_rows == 16
    # The batches kept ready ahead (16 + 32 + 64 + 128 rows) and those in flight.
    assert sent < 1000


def test_a_tasks_error_is_raised_in_the_task(emulator: EmulatorFactory) -> None:
    from lwbatch.errors import NoModelDeployedError

    with emulator(undeployed=frozenset({"enwiki-damaging"})) as (_, base_url):
        with pytest.raises(NoModelDeployedError):
            list(_task(base_url)(_rev_ids(3)))


@pytest.mark.parametrize(
    ("kind", "text", "message", "code"),
    [
        (
            "PythonException",
            "An exception was thrown from the Python worker.\nTraceback (most recent call "
            'last):\n  File "x.py", line 1, in f\nlwbatch.errors.InputError: in.csv: bad\n',
            "in.csv: bad",
            2,
        ),
        (
            "PythonException",
            "Traceback (most recent call last):\nZeroDivisionError: division by zero\n",
            "a Spark task failed: ZeroDivisionError: division by zero",
            1,
        ),
        (
            "PythonException",
            "Traceback (most recent call last):\nModuleNotFoundError: No module named 'lwbatch'\n",
            "a Spark task failed: ModuleNotFoundError: No module named 'lwbatch': the "
            "executors' Python lacks what lwbatch needs; point PYSPARK_PYTHON (or "
            "spark.pyspark.python) at an environment with lwbatch installed, on every executor",
            1,
        ),
        (
            "AnalysisException",
            "[PATH_NOT_FOUND] Path does not exist: file:/x.\nSQLSTATE: 42K03",
            "the Spark job failed: [PATH_NOT_FOUND] Path does not exist: file:/x.",
            1,
        ),
    ],
)
def test_a_failed_job_is_told_in_one_line(kind: str, text: str, message: str, code: int) -> None:
    from lwbatch.cli.spark_run import job_error

    error = job_error(type(kind, (Exception,), {})(text))
    assert (str(error), error.exit_code) == (message, code)


def test_a_dataframe_is_checked_before_any_job(
    spark: Any, caplog: pytest.LogCaptureFixture, emulator: EmulatorFactory
) -> None:
    from lwbatch.errors import InputError, UsageError
    from lwbatch.spark import score

    df = spark.createDataFrame([(1, "en")], ["rev_id", "lang"])
    with pytest.raises(UsageError) as info:
        score(df, models=["enwiki-damaging"], rate="10/s", wiki_column="rev_id")
    assert str(info.value) == (
        "`wiki_column` 'rev_id' is the name of the id column; give the column that holds "
        "each row's wiki"
    )
    with pytest.raises(InputError) as info:
        score(df, models=["enwiki-damaging"], rate="10/s", wiki_column="wiki_db")
    assert str(info.value) == (
        "the DataFrame: no column 'wiki_db' for `wiki_column` (columns: 'rev_id', 'lang')"
    )
    with pytest.raises(UsageError) as info:
        score(df, models=["enwiki-damaging"], rate="10/s", slots=0)
    assert str(info.value) == "`slots` must be >= 1, got 0"
    with pytest.raises(UsageError) as info:
        score(df, models=["outlink-topic-model"], rate="10/s")
    assert str(info.value).startswith("outlink-topic-model needs a page_id or page_title column")
    with pytest.raises(UsageError) as info:
        score(df, models=["enwiki-damaging"], rate="10/s", slots=11)
    assert str(info.value).startswith("`slots` 11: the budget's window 10/1s allows fewer")
    caplog.set_level("INFO", "lwbatch")
    with emulator() as (_, base_url):
        at = Connection(endpoint=Endpoint(base_url=base_url))
        score(
            df, models=["enwiki-damaging", "dewiki-goodfaith"], rate="10/s", slots=3, connection=at
        )
    # Its `lang` column names each row's wiki: no warning.
    assert [r.getMessage()[:27] for r in caplog.records] == ["spark: budget 10/1s for the"]
    caplog.clear()
    ids_only = spark.createDataFrame([(1,)], ["rev_id"])
    with emulator() as (_, base_url):
        at = Connection(endpoint=Endpoint(base_url=base_url))
        score(
            ids_only,
            models=["enwiki-damaging", "dewiki-goodfaith"],
            rate="10/s",
            slots=3,
            connection=at,
        )
    assert [r.getMessage() for r in caplog.records] == [
        "the DataFrame names no wiki per row, and the models take each rev_id as a revision "
        "of another wiki (enwiki for enwiki-damaging, dewiki for dewiki-goodfaith): if the "
        "rows are of one wiki, give `lang` or name a wiki column with `wiki_column`",
        "spark: budget 10/1s for the job over 3 task slots, per task 4/1s or 3/1s "
        "(set `slots` to the executors x cores that run at once)",
    ]


def test_the_spark_engine_refuses_before_any_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lwbatch.cli import main

    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1], pa.int64())})
    args = ["score", str(inp), "-o", str(tmp_path / "out"), "--engine", "spark"]
    args += ["-m", "enwiki-damaging"]
    assert main([*args, "--rate", "unlimited"]) == 2
    assert capsys.readouterr().err.startswith(
        "lwbatch: error: --rate unlimited: the public API gateway enforces a tier budget"
    )
    monkeypatch.setenv("LIFTWING_CLIENT_ID", "me")
    monkeypatch.setenv("LIFTWING_CLIENT_SECRET", "s3cret")
    assert main([*args, "--endpoint", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lwbatch: error: OAuth2 credentials (--credentials, or LIFTWING_CLIENT")
    assert "s3cret" not in err
    assert not (tmp_path / "out").exists()
