"""Spark jobs that fail part way: a killed driver, a task that fails once, a second
action on a scored DataFrame, and a job whose first requests say it cannot succeed.
Each is finished, or ended, paying only for what was not answered. local[2] against
the emulator on 127.0.0.1; skipped where pyspark is not installed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Endpoint, Token, score_file
from lwbatch.config import RetryPolicy
from lwbatch.settings import Connection, Pacing
from tests.conftest import EmulatorFactory, max_in_window, write_parquet

pytestmark = pytest.mark.xdist_group("spark")
pyspark = pytest.importorskip("pyspark")
pytest.importorskip("pandas")

# Models asked one revision per request: what a job needs is rows x models, whatever
# its partitions (revertrisk batches per task).
MODELS = ["{wiki}-damaging", "{wiki}-goodfaith"]
KEYS = {"wiki_column": "wiki_db", "id_column": "revision_id"}


def lake(path: Path, per_wiki: int) -> Path:
    rows = [
        (wiki, rev) for rev in range(1, per_wiki + 1) for wiki in ("enwiki", "dewiki", "frwiki")
    ]
    return write_parquet(
        path,
        {
            "wiki_db": [w for w, _ in rows],
            "revision_id": pa.array([r for _, r in rows], pa.int64()),
        },
    )


def sorted_rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: (r["wiki_db"], r["rev_id"]))


def scored_locally(inp: Path, out: Path, base_url: str) -> list[dict[str, Any]]:
    score_file(
        inp,
        out,
        models=MODELS,
        rate="5000/1s",
        connection=Connection(endpoint=Endpoint(base_url=base_url)),
        **KEYS,
    )
    return sorted_rows(pq.read_table(out))


def wait_for(condition: Any, what: str, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(
                f"the driver ended before {what}: {process.stderr.read() if process.stderr else ''}"
            )
        assert time.monotonic() < deadline, f"no {what} within 120 s"
        time.sleep(0.05)


def test_a_killed_or_interrupted_job_is_finished_by_running_the_same_command_again(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = lake(tmp_path / "lake.parquet", 110)  # 330 rows, 660 requests
    out = tmp_path / "scores"
    rate, in_flight = 100, 2 * 8  # 100/1s; two tasks of 8 requests in flight at most
    every = 1  # seconds between commits (5 by default: the same bound, 5 times longer)
    # As users run it: lwbatch from its environment's bin/, no venv on PATH, no
    # PYSPARK_PYTHON.
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "SPARK_LOCAL_IP": "127.0.0.1"}
    # A JVM that starts sooner (as the suite's own session does).
    java = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    env["PYSPARK_SUBMIT_ARGS"] = f"--driver-java-options '{java}' pyspark-shell"
    if "JAVA_HOME" in os.environ:
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    with emulator() as (emu, base_url):
        expected = scored_locally(inp, tmp_path / "local.parquet", base_url)
        needed = emu.stats.requests
        command = [str(Path(sys.executable).parent / "lwbatch"), "score", str(inp), "-o", str(out)]
        command += ["--engine", "spark", "--master", "local[2]", "--rate", f"{rate}/1s"]
        command += ["--wiki-column", "wiki_db", "--id-column", "revision_id"]
        command += ["--concurrency", "8", "--endpoint", base_url, "--commit-every", str(every)]
        command += ["--progress-every", "1"]
        command += [arg for m in MODELS for arg in ("-m", m)]
        driver = subprocess.Popen(
            command, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True
        )
        # Killed once it has sent twice a commit's worth of the rate and a full flight:
        # had the rerun paid again for half of what came before, the bound would fail.
        killed_at = needed + 2 * (every * rate + in_flight)
        wait_for(lambda: emu.stats.requests >= killed_at, "the requests", driver)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.communicate()
        area = out.parent / ".scores.lwbatch-progress"
        assert area.is_dir()
        # Run again, and stopped with Ctrl-C once its tasks send: one line, exit 130.
        before = emu.stats.requests
        again = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: emu.stats.requests >= before + 20, "the tasks' requests", again)
        again.send_signal(signal.SIGINT)
        _, err = again.communicate(timeout=60)
        interrupted = emu.stats.requests - before  # lost too, at most
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        sent = emu.stats.requests - needed
    assert again.returncode == 130
    assert err.splitlines()[-1] == (
        f"lwbatch: interrupted; the answers received are kept ({area.as_uri()}): run the "
        "same command again to finish the job"
    )
    # lwbatch's lines only: no traceback of py4j's threads. While it ran, a line a second
    # said what the tasks had kept.
    assert [line for line in err.splitlines() if not line.startswith("lwbatch: ")] == []
    assert any(" answers kept, " in line for line in err.splitlines())
    assert sent <= needed + every * rate + in_flight + interrupted
    assert sorted_rows(pq.read_table(out)) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake.parquet", "local.parquet", "scores"]
    # lwbatch's lines only: no JVM or Spark log line reaches the console.
    assert [line for line in rerun.stderr.splitlines() if "WARN" in line or "log4j" in line] == []
    assert "answers kept before" in rerun.stderr


def test_a_task_that_fails_once_pays_again_only_for_its_requests_in_flight(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory
) -> None:
    from lwbatch.spark import counters, score

    def fail_first_attempt_of_partition_0(
        batches: Iterator[pa.RecordBatch],
    ) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        # Defined here, so that Spark ships it to the workers by value.
        context = TaskContext.get()
        failing = context is not None and context.partitionId() == 0
        failing = failing and context is not None and context.attemptNumber() == 0
        seen = 0
        for batch in batches:
            seen += batch.num_rows
            if failing and seen >= 200:
                raise RuntimeError("injected: the executor was lost")
            yield batch

    inp = lake(tmp_path / "lake.parquet", 200)
    with emulator() as (emu, base_url):
        expected = scored_locally(inp, tmp_path / "local.parquet", base_url)
        needed = emu.stats.requests
        counted = counters(spark)
        scored = score(
            spark.read.parquet(str(inp)),
            models=MODELS,
            rate="2000/1s",
            slots=2,
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            pacing=Pacing(concurrency=4, share=False),
            progress=tmp_path / "progress",
            counters=counted,
            **KEYS,
        )
        failing = scored.mapInArrow(fail_first_attempt_of_partition_0, scored.schema)
        result = failing.toArrow()
        sent = emu.stats.requests - needed
    assert sorted_rows(result) == expected
    # The failed attempt's answers were committed as it ended: the retry asks only
    # what was in flight (4 requests at most) again.
    assert needed <= sent <= needed + 4
    values = counted.values()
    assert values["answers_resumed"] > 0
    assert 0 < values["requests_failed_attempts"] < needed


def test_a_second_action_on_a_dataframe_scored_with_progress_sends_nothing(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory
) -> None:
    from lwbatch.spark import finish, score

    inp = lake(tmp_path / "lake.parquet", 40)
    with emulator() as (emu, base_url):
        expected = scored_locally(inp, tmp_path / "local.parquet", base_url)
        needed = emu.stats.requests
        scored = score(
            spark.read.parquet(str(inp)),
            models=MODELS,
            rate="2000/1s",
            slots=2,
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            progress=str(tmp_path / "progress"),
            **KEYS,
        )
        assert scored.count() == 120
        after_count = emu.stats.requests - needed
        scored.write.parquet(str(tmp_path / "written"))
        after_write = emu.stats.requests - needed
    assert after_count == needed
    assert after_write == needed  # the write paid nothing
    assert sorted_rows(pq.read_table(tmp_path / "written")) == expected
    finish(tmp_path / "progress")
    assert not (tmp_path / "progress").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"token": "the-right-one"},
            "401 Unauthorized from http://127.0.0.1:",
        ),
        (
            {"undeployed": frozenset({"enwiki-damaging", "dewiki-damaging", "frwiki-damaging"})},
            "every requested model answered 404 (not deployed): {wiki}-damaging",
        ),
    ],
)
def test_a_job_that_cannot_succeed_ends_after_the_preflight_requests(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory, options: dict[str, Any], message: str
) -> None:
    from lwbatch.errors import LWBatchError
    from lwbatch.spark import score

    inp = lake(tmp_path / "lake.parquet", 50)
    unreachable = options.pop("unreachable", False)
    with emulator(**options) as (emu, base_url):
        with pytest.raises(LWBatchError) as info:
            score(
                spark.read.parquet(str(inp)),
                models=["{wiki}-damaging"],
                rate="1000/1s",
                slots=2,
                connection=Connection(
                    # Port 9 (discard) on this machine: nothing listens.
                    endpoint=Endpoint(base_url="http://127.0.0.1:9" if unreachable else base_url),
                    token=Token("a-wrong-one"),
                ),
                pacing=Pacing(share=False, retry=RetryPolicy(max_attempts=2)),
                progress=tmp_path / "progress",
                **KEYS,
            )
        sent = emu.stats.requests
    assert str(info.value).startswith(message)
    # At most one row of each of the three wikis, for the one model each (a 401 may end
    # the preflight before the other two leave, on a loaded machine): the job's other
    # 147 rows cost nothing, and nothing is kept.
    assert sent == 0 if unreachable else 1 <= sent <= 3
    assert not (tmp_path / "progress").exists()


def test_a_task_counts_the_preflight_requests_sent_just_before_in_its_share(
    emulator: EmulatorFactory,
) -> None:
    from lwbatch.config import Budget, Rate
    from lwbatch.io.columns import Columns
    from lwbatch.spark import PartitionTask

    budget = Rate(4, 2.0)
    with emulator() as (emu, base_url):
        now = time.time()
        sent_before = (now - 0.2, now - 0.1, now)  # the driver's, just now
        task = PartitionTask(
            models=("enwiki-damaging",),
            budget=Budget.from_rate(budget),
            slots=1,
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            pacing=Pacing(concurrency=4, share=False),
            columns=Columns.decide(
                ["rev_id"], id_column="rev_id", wiki_column=None, keep_columns=None, where="x"
            ),
            lang="en",
            counters=None,
            sent_before=sent_before,
        )
        batch = pa.record_batch([pa.array(range(1, 6), pa.int64())], names=["rev_id"])
        rows = sum(out.num_rows for out in task(iter([batch])))
        arrivals = sorted(emu.stats.arrivals)
    assert rows == 5
    # The emulator's clock is the monotonic one: the driver's requests on it.
    offset = time.monotonic() - time.time()
    together = sorted([t + offset for t in sent_before] + arrivals)
    assert max_in_window(together, budget.period) <= budget.requests


def test_one_score_cache_serves_local_and_spark_runs(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main
    from lwbatch.settings import Files

    inp = lake(tmp_path / "lake.parquet", 30)  # 90 rows, 180 requests
    args = ["score", str(inp), "--engine", "spark", "--master", "local[2]", "--rate", "1000/1s"]
    args += ["--wiki-column", "wiki_db", "--id-column", "revision_id", "-q"]
    args += [arg for m in MODELS for arg in ("-m", m)]
    with emulator() as (emu, base_url):
        at = Connection(endpoint=Endpoint(base_url=base_url))
        # A local run fills a cache; a Spark job of the same input then sends nothing.
        score_file(
            inp,
            tmp_path / "local.parquet",
            models=MODELS,
            rate="5000/1s",
            connection=at,
            files=Files(cache=tmp_path / "local.sqlite"),
            **KEYS,
        )
        assert emu.stats.requests == 180
        cached = [*args, "--cache", str(tmp_path / "local.sqlite"), "--base-url", base_url]
        assert main([*cached, "-o", str(tmp_path / "from-cache")]) == 0, capsys.readouterr().err
        assert emu.stats.requests == 180
        # A Spark job fills a fresh cache when it is done; a local run then sends nothing.
        fresh = [*args, "--cache", str(tmp_path / "spark.sqlite"), "--base-url", base_url]
        assert main([*fresh, "-o", str(tmp_path / "to-cache")]) == 0, capsys.readouterr().err
        assert emu.stats.requests == 360
        score_file(
            inp,
            tmp_path / "local-again.parquet",
            models=MODELS,
            rate="5000/1s",
            connection=at,
            files=Files(cache=tmp_path / "spark.sqlite"),
            **KEYS,
        )
        assert emu.stats.requests == 360
    expected = sorted_rows(pq.read_table(tmp_path / "local.parquet"))
    for name in ("from-cache", "to-cache", "local-again.parquet"):
        assert sorted_rows(pq.read_table(tmp_path / name)) == expected, name


def test_an_invalid_row_names_its_file_and_row(
    spark: Any, tmp_path: Path, emulator: EmulatorFactory
) -> None:
    from lwbatch.spark import score

    inp = write_parquet(
        tmp_path / "part-7.parquet",
        {"revision_id": pa.array([11, 12, -5, 13, 0], pa.int64())},
    )
    with emulator() as (_, base_url):
        at = Connection(endpoint=Endpoint(base_url=base_url))
        from_file = score(
            spark.read.parquet(str(inp)),
            models=["enwiki-damaging"],
            rate="1000/1s",
            id_column="revision_id",
            connection=at,
            slots=2,
        ).toArrow()
        # A DataFrame that comes from no file: no place to name.
        built = spark.createDataFrame([(-5,)], ["revision_id"])
        from_memory = score(
            built,
            models=["enwiki-damaging"],
            rate="1000/1s",
            id_column="revision_id",
            connection=at,
            slots=2,
        ).toArrow()
    invalid = sorted(
        (r["rev_id"], r["enwiki-damaging"]["error_message"])
        for r in from_file.to_pylist()
        if r["enwiki-damaging"]["error"] == "invalid_input"
    )
    assert invalid == [
        (-5, f"{inp}, row 3: revision_id -5 is not a positive integer"),
        (0, f"{inp}, row 5: revision_id 0 is not a positive integer"),
    ]
    assert [r["enwiki-damaging"]["error_message"] for r in from_memory.to_pylist()] == [
        "revision_id -5 is not a positive integer"
    ]


def test_the_cli_refuses_a_progress_place_that_holds_something_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = lake(tmp_path / "lake.parquet", 2)
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    args = ["score", str(inp), "-o", str(tmp_path / "out"), "--engine", "spark"]
    args += ["-m", "enwiki-damaging", "--rate", "10/1s", "--endpoint", "http://127.0.0.1:9"]
    for extra in ([], ["--restart"]):
        assert main([*args, "--progress", str(mine), *extra]) == 2
        assert capsys.readouterr().err == (
            f"lwbatch: error: --progress {mine} exists and is not an lwbatch progress area; "
            "choose another place\n"
        )
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    assert main([*args, "--progress", str(inp)]) == 2
    assert capsys.readouterr().err == (
        f"lwbatch: error: --progress {inp} is INPUT, or holds it; choose another place\n"
    )
    assert not (tmp_path / "out").exists()


def test_the_tasks_tallies_add_up_as_one_run() -> None:
    from lwbatch.engine.stats import LatencyHistogram, RunStats
    from lwbatch.spark.counters import merge, tally_of

    one, two = RunStats(), RunStats()
    for stats, latencies, first, last in (
        (one, (0.1, 0.2), 100.0, 130.0),
        (two, (0.4,), 90.0, 120.0),
    ):
        for seconds in latencies:
            stats.record_latency("m", seconds)
        stats.requests_sent, stats.first_sent, stats.last_sent = len(latencies), first, last
        stats.requests_by_outcome["200"] += len(latencies)
    two.first_invalid = "f.parquet, row 3: revision_id -5 is not a positive integer"
    tally = merge(merge({}, tally_of(one, answers_resumed=5)), tally_of(two))
    assert tally["counts"]["requests_sent"] == 3
    assert tally["counts"]["answers_resumed"] == 5
    assert tally["outcomes"] == {"200": 3}
    assert (tally["first"], tally["last"]) == (90.0, 130.0)
    assert tally["first_invalid"].startswith("f.parquet, row 3:")
    together = LatencyHistogram.from_buckets(tally["latency"]["m"])
    alone = LatencyHistogram()
    for seconds in (0.1, 0.2, 0.4):
        alone.add(seconds)
    assert together.count == 3
    assert [together.quantile(q) for q in (0.0, 0.5, 1.0)] == [
        alone.quantile(q) for q in (0.0, 0.5, 1.0)
    ]
