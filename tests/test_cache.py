"""The score cache: final answers kept across runs, one trusted version per model."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import (
    Budget,
    Endpoint,
    ErrorType,
    InputError,
    Score,
    UsageError,
    plan_file,
    score_file,
)
from lwbatch.cache import SqliteScoreCache
from lwbatch.settings import Connection, Files
from lwbatch.testing.emulator import Latency
from tests.conftest import EmulatorFactory, emulated_p_true, kill_after_requests, write_parquet

MODELS = ["enwiki-damaging", "revertrisk-language-agnostic"]


def revisions(tmp_path: Path, ids: list[int], name: str = "in.parquet") -> Path:
    return write_parquet(tmp_path / name, {"rev_id": pa.array(ids, pa.int64())})


def sorted_rows(path: Path) -> list[dict[str, object]]:
    return sorted(pq.read_table(path).to_pylist(), key=lambda r: r["rev_id"])  # type: ignore[arg-type, return-value]


def scored(p: float, version: str) -> Score:
    return Score(
        prediction=p > 0.5,
        probability={"false": round(1 - p, 4), "true": p},
        model_version=version,
    )


def test_a_rerun_with_the_cache_sends_nothing_and_writes_the_same_rows(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path, [*range(1, 41), 5, 7])
    cache = tmp_path / "scores.db"
    with emulator(missing=frozenset({3})) as (emu, base_url):
        options = {
            "models": MODELS,
            "rate": Budget.unlimited(),
            "connection": Connection(endpoint=Endpoint(base_url=base_url)),
            "files": Files(cache=cache),
        }
        first = score_file(inp, tmp_path / "a.parquet", **options)
        sent = emu.stats.requests
        second = score_file(inp, tmp_path / "b.parquet", **options)
        assert emu.stats.requests == sent
    # 40 damaging requests and 2 revertrisk batches of 20.
    assert (first.requests_sent, second.requests_sent) == (42, 0)
    assert second.cached_per_model == {"enwiki-damaging": 40, "revertrisk-language-agnostic": 40}
    assert sorted_rows(tmp_path / "b.parquet") == sorted_rows(tmp_path / "a.parquet")
    row = next(r for r in sorted_rows(tmp_path / "b.parquet") if r["rev_id"] == 2)
    p = emulated_p_true("enwiki-damaging", 2)
    assert row["enwiki-damaging"] == {
        "prediction": p > 0.5,
        "probability": [("false", round(1 - p, 4)), ("true", p)],
        "model_version": "0.5.1",
        "error": None,
        "error_message": None,
    }
    # A grown input with one more model: only what the cache lacks is asked.
    grown = revisions(tmp_path, list(range(1, 51)), "grown.parquet")
    with emulator() as (emu, base_url):
        options["connection"] = Connection(endpoint=Endpoint(base_url=base_url))
        options["models"] = [*MODELS, "enwiki-goodfaith"]
        assert plan_file(grown, models=options["models"], files=Files(cache=cache)).requests == {
            "enwiki-damaging": 10,
            "revertrisk-language-agnostic": 1,
            "enwiki-goodfaith": 50,
        }
        third = score_file(grown, tmp_path / "c.parquet", **options)
        assert dict(emu.stats.by_model) == {
            "enwiki-damaging": 10,
            "revertrisk-language-agnostic": 1,
            "enwiki-goodfaith": 50,
        }
    assert third.cached_per_model == {"enwiki-damaging": 40, "revertrisk-language-agnostic": 40}


def test_only_final_answers_are_kept(tmp_path: Path) -> None:
    cache = SqliteScoreCache(tmp_path / "c.db")
    cache.put(
        "enwiki-damaging",
        [
            ("enwiki", 1, scored(0.7, "0.5.1")),
            ("enwiki", 2, Score.failed(ErrorType.NOT_FOUND, "RevisionNotFound: 2")),
            ("enwiki", 3, Score.failed(ErrorType.DELETED, "TextDeleted")),
            ("enwiki", 4, Score.failed(ErrorType.TRANSIENT_ERROR, "503 after 5 attempts")),
            ("enwiki", 5, Score.failed(ErrorType.RATE_LIMITED, "429")),
            ("enwiki", 6, Score.failed(ErrorType.UNSCORABLE, "422")),
            ("enwiki", 7, Score.failed(ErrorType.SERVER_ERROR, "500 KeyError for 3 in a row")),
            ("enwiki", 8, Score.failed(ErrorType.UNSCORABLE, "'user'", cacheable=False)),
            ("enwiki", 9, Score.failed(ErrorType.BAD_REQUEST, "400")),
        ],
    )
    assert cache.get("enwiki-damaging", "enwiki", 1) == scored(0.7, "0.5.1")
    assert cache.get("enwiki-damaging", "enwiki", 2) == Score(
        error=ErrorType.NOT_FOUND, error_message="RevisionNotFound: 2"
    )
    assert cache.get("enwiki-damaging", "enwiki", 3) is not None
    assert cache.get("enwiki-damaging", "enwiki", 6) == Score(
        error=ErrorType.UNSCORABLE, error_message="422"
    )
    assert [cache.get("enwiki-damaging", "enwiki", r) for r in (4, 5, 7, 8, 9)] == [None] * 5
    assert cache.get("enwiki-damaging", "dewiki", 1) is None  # keyed by wiki too
    cache.close()


def test_a_look_as_of_a_moment_leaves_out_what_was_stored_since(tmp_path: Path) -> None:
    # What the estimate of a run reads: answers the run itself stores are not "cached".
    cache = SqliteScoreCache(tmp_path / "c.db")
    cache.put("enwiki-damaging", [("enwiki", 1, scored(0.7, "0.5.1"))])
    then = cache.as_of(time.time())
    cache.put("enwiki-damaging", [("enwiki", 2, scored(0.2, "0.5.1"))])
    assert then.get("enwiki-damaging", "enwiki", 1) == scored(0.7, "0.5.1")
    assert then.get("enwiki-damaging", "enwiki", 2) is None
    assert cache.get("enwiki-damaging", "enwiki", 2) == scored(0.2, "0.5.1")
    with pytest.raises(UsageError):
        then.put("enwiki-damaging", [("enwiki", 3, scored(0.1, "0.5.1"))])
    cache.close()


def test_a_new_version_of_one_model_untrusts_that_models_entries_only(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    cache = SqliteScoreCache(path)
    cache.put("enwiki-damaging", [("enwiki", 1, scored(0.7, "0.5.1"))])
    cache.put("enwiki-goodfaith", [("enwiki", 1, scored(0.2, "0.5.1"))])
    cache.put("enwiki-damaging", [("enwiki", 2, scored(0.9, "0.6.0"))])
    assert cache.get("enwiki-damaging", "enwiki", 1) is None
    assert cache.get("enwiki-damaging", "enwiki", 2) == scored(0.9, "0.6.0")
    assert cache.get("enwiki-goodfaith", "enwiki", 1) == scored(0.2, "0.5.1")
    cache.close()
    # The trust is kept in the file: another process sees the same.
    again = SqliteScoreCache(path)
    assert again.get("enwiki-damaging", "enwiki", 1) is None
    assert [(e.model, e.version, e.trusted, e.stale) for e in again.models()] == [
        ("enwiki-damaging", "0.6.0", 1, 1),
        ("enwiki-goodfaith", "0.5.1", 1, 0),
    ]
    assert again.prune() == 1
    assert [(e.model, e.trusted, e.stale) for e in again.models()] == [
        ("enwiki-damaging", 1, 0),
        ("enwiki-goodfaith", 1, 0),
    ]
    again.close()


def test_two_processes_sharing_a_cache_agree_on_the_trusted_version(tmp_path: Path) -> None:
    # Two open caches on one file stand for two processes: what one learns about a
    # new version, the other uses at its next lookup, not only after a restart.
    path = tmp_path / "c.db"
    first, second = SqliteScoreCache(path), SqliteScoreCache(path)
    first.put("enwiki-damaging", [("enwiki", 1, scored(0.7, "0.5.1"))])
    assert second.get("enwiki-damaging", "enwiki", 1) == scored(0.7, "0.5.1")
    second.put("enwiki-damaging", [("enwiki", 2, scored(0.9, "0.6.0"))])
    assert first.get("enwiki-damaging", "enwiki", 1) is None
    assert first.get("enwiki-damaging", "enwiki", 2) == scored(0.9, "0.6.0")
    # An error answer names no version: whichever version said it, it stays in use.
    first.put("enwiki-damaging", [("enwiki", 3, Score.failed(ErrorType.NOT_FOUND, "gone"))])
    assert second.get("enwiki-damaging", "enwiki", 3) == Score.failed(ErrorType.NOT_FOUND, "gone")
    first.close()
    second.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT model, version FROM versions").fetchall() == [
            ("enwiki-damaging", "0.6.0")
        ]


def test_final_errors_stay_in_use_across_versions_and_before_the_first_one(
    tmp_path: Path,
) -> None:
    cache = SqliteScoreCache(tmp_path / "c.db")
    gone = Score.failed(ErrorType.NOT_FOUND, "RevisionNotFound: 1")
    deleted = Score.failed(ErrorType.DELETED, "TextDeleted")
    cache.put("enwiki-damaging", [("enwiki", 1, gone)])  # before any version is known
    cache.put("enwiki-damaging", [("enwiki", 2, scored(0.3, "0.5.1"))])
    # One batch: an error, then the first score of a new version.
    cache.put("enwiki-damaging", [("enwiki", 3, deleted), ("enwiki", 4, scored(0.8, "0.6.0"))])
    assert [cache.get("enwiki-damaging", "enwiki", r) for r in (1, 2, 3, 4)] == [
        gone,
        None,  # a score of the older version
        deleted,
        scored(0.8, "0.6.0"),
    ]
    # An error said under 0.6.0 outlives it.
    cache.put("enwiki-damaging", [("enwiki", 5, gone)])
    cache.put("enwiki-damaging", [("enwiki", 6, scored(0.2, "0.7.0"))])
    assert cache.get("enwiki-damaging", "enwiki", 5) == gone
    assert cache.get("enwiki-damaging", "enwiki", 4) is None
    assert [(e.model, e.version, e.trusted, e.stale) for e in cache.models()] == [
        ("enwiki-damaging", "0.7.0", 4, 2)
    ]
    assert cache.prune() == 2
    assert sum(b.num_rows for b in cache.export()) == 4
    cache.close()


def test_unscorable_is_kept_under_the_version_that_said_it(tmp_path: Path) -> None:
    cache = SqliteScoreCache(tmp_path / "c.db")
    unscorable = Score.failed(ErrorType.UNSCORABLE, "Unexpected content type for rev-id 1")
    # No version is known yet: nothing to keep it under.
    cache.put("enwiki-damaging", [("enwiki", 1, unscorable)])
    assert cache.get("enwiki-damaging", "enwiki", 1) is None
    cache.put("enwiki-damaging", [("enwiki", 2, scored(0.3, "0.5.1")), ("enwiki", 1, unscorable)])
    assert cache.get("enwiki-damaging", "enwiki", 1) == unscorable
    # Another version may score it: the first answer of 0.6.0 retires it with the scores.
    cache.put("enwiki-damaging", [("enwiki", 3, scored(0.8, "0.6.0"))])
    assert cache.get("enwiki-damaging", "enwiki", 1) is None
    assert [(e.model, e.version, e.trusted, e.stale) for e in cache.models()] == [
        ("enwiki-damaging", "0.6.0", 1, 2)
    ]
    cache.close()


def test_a_lookup_never_waits_for_a_write_held_up_by_another_process(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "c.db"
    cache = SqliteScoreCache(path, busy_timeout=0.5)
    cache.put("enwiki-damaging", [("enwiki", 1, scored(0.7, "0.5.1"))])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing, for longer than the wait
    failures: list[BaseException] = []

    def write() -> None:
        try:
            cache.put("enwiki-damaging", [("enwiki", 2, scored(0.1, "0.5.1"))])
        except InputError as exc:
            failures.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while not cache.writing:  # the write is waiting for the other's lock
            time.sleep(0.001)
        assert cache.get("enwiki-damaging", "enwiki", 1) == scored(0.7, "0.5.1")
        assert writer.is_alive()  # the lookup did not wait for it
    finally:
        writer.join()
        other.execute("ROLLBACK")
    assert [str(f) for f in failures] == [f"{path}: cannot write it (database is locked)"]
    cache.put("enwiki-damaging", [("enwiki", 2, scored(0.1, "0.5.1"))])  # usable after
    assert cache.get("enwiki-damaging", "enwiki", 2) == scored(0.1, "0.5.1")
    cache.close()


def test_a_read_only_look_writes_nothing(tmp_path: Path) -> None:
    from lwbatch.errors import UsageError

    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    look = SqliteScoreCache(empty, read_only=True)
    assert (look.models(), look.get("enwiki-damaging", "enwiki", 1), list(look.export())) == (
        [],
        None,
        [],
    )
    look.close()
    assert empty.stat().st_size == 0
    path = tmp_path / "c.db"
    SqliteScoreCache(path).close()
    look = SqliteScoreCache(path, read_only=True)
    with pytest.raises(UsageError):
        look.put("enwiki-damaging", [("enwiki", 1, scored(0.7, "0.5.1"))])
    look.close()
    with pytest.raises(InputError) as info:
        SqliteScoreCache(tmp_path / "none.db", read_only=True)
    assert str(info.value) == f"{tmp_path / 'none.db'}: no such file"


def test_a_cache_that_cannot_be_written_is_refused_before_any_request(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        SqliteScoreCache(tmp_path / "nowhere" / "c.db")
    assert (
        str(info.value)
        == f"{tmp_path / 'nowhere' / 'c.db'}: no such folder: {tmp_path / 'nowhere'}"
    )
    path = tmp_path / "c.db"
    SqliteScoreCache(path).close()
    path.chmod(0o444)
    try:
        if os.access(path, os.W_OK):
            pytest.skip("running as a user who may write any file")
        with pytest.raises(InputError) as info:
            SqliteScoreCache(path)
        assert str(info.value) == f"{path}: cannot read and write it (permission denied)"
    finally:
        path.chmod(0o644)


def test_a_cache_damaged_in_the_middle_is_refused_not_used(tmp_path: Path) -> None:
    from lwbatch.cli import main

    path = tmp_path / "c.db"
    cache = SqliteScoreCache(path)
    cache.put("enwiki-damaging", [("enwiki", r, scored(0.7, "0.5.1")) for r in range(3000)])
    cache.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    assert pages > 10
    with path.open("r+b") as f:  # the header and schema pages stay readable
        f.seek(page * (pages // 2) + 100)
        f.write(b"\xff" * 2000)
    with pytest.raises(InputError) as info:
        SqliteScoreCache(path)
    assert str(info.value).startswith(f"{path}: not an lwbatch score cache, or damaged (")
    for args in (
        ["cache", "stats", str(path)],
        ["cache", "export", str(path), "-o", str(tmp_path / "e.parquet")],
    ):
        assert main(args) == 2


def test_a_cache_that_fails_to_write_warns_and_the_run_goes_on(
    tmp_path: Path, emulator: EmulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Full:
        puts = 0

        def get(self, model: str, wiki: str, rev_id: int) -> Score | None:
            return None

        def put(self, model: str, answers: object) -> None:
            self.puts += 1
            raise InputError("cannot write it (database or disk is full)", path=tmp_path / "c.db")

        def close(self) -> None:
            pass

    full = Full()
    inp = revisions(tmp_path, list(range(1, 6)))
    with emulator() as (emu, base_url):
        report = score_file(
            inp,
            tmp_path / "out.parquet",
            models=["enwiki-damaging"],
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            files=Files(cache=full),
        )
    assert (report.requests_sent, full.puts) == (5, 5)
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 5
    warnings = [r.getMessage() for r in caplog.records if "cache" in r.getMessage()]
    assert warnings == [
        f"{tmp_path / 'c.db'}: cannot write it (database or disk is full); answers are not "
        "kept in the cache"
    ]


def test_template_columns_are_cached_by_each_rows_model_and_page_models_by_revision(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = write_parquet(
        tmp_path / "in.parquet",
        {
            "rev_id": pa.array([1, 2, 1, 3], pa.int64()),
            "wiki_db": pa.array(["enwiki", "enwiki", "dewiki", "dewiki"]),
            "page_id": pa.array([10, 20, 10, 30], pa.int64()),
        },
    )
    options = {
        "models": ["{wiki}-damaging", "outlink-topic-model"],
        "wiki_column": "wiki_db",
        "rate": Budget.unlimited(),
        "files": Files(cache=tmp_path / "c.db"),
    }
    with emulator() as (emu, base_url):
        score_file(
            inp,
            tmp_path / "a.parquet",
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            **options,
        )
        first = dict(emu.stats.by_model)
        second = score_file(
            inp,
            tmp_path / "b.parquet",
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            **options,
        )
        again = {m: n - first.get(m, 0) for m, n in emu.stats.by_model.items()}
    assert first == {"enwiki-damaging": 2, "dewiki-damaging": 2, "outlink-topic-model": 4}
    # outlink-topic-model is sent revision_id and answers for that revision (it parses
    # the page at oldid): its answers are kept by (wiki, rev_id) too.
    assert again == {"enwiki-damaging": 0, "dewiki-damaging": 0, "outlink-topic-model": 0}
    assert second.cached_per_model == {"{wiki}-damaging": 4, "outlink-topic-model": 4}
    assert sorted_rows(tmp_path / "b.parquet") == sorted_rows(tmp_path / "a.parquet")
    assert [e.model for e in SqliteScoreCache(tmp_path / "c.db").models()] == [
        "dewiki-damaging",
        "enwiki-damaging",
        "outlink-topic-model",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a database, just text\n" * 10, "not an lwbatch score cache, or damaged"),
        (
            None,
            "written by a newer lwbatch (cache format 99; this one reads 1): upgrade "
            "lwbatch, or give another cache",
        ),
        ("other", "not an lwbatch score cache, or damaged (it has tables of its own)"),
    ],
)
def test_a_corrupt_foreign_or_newer_cache_is_refused(
    tmp_path: Path, content: bytes | str | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    path = tmp_path / "c.db"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "other":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE t (x)")
    else:
        SqliteScoreCache(path).close()
        with sqlite3.connect(path) as db:
            db.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    with pytest.raises(InputError) as info:
        SqliteScoreCache(path)
    assert str(info.value).startswith(f"{path}: {message}")
    inp = revisions(tmp_path, [1])
    out = tmp_path / "out.parquet"
    code = main(
        ["score", str(inp), "-o", str(out), "-m", "enwiki-damaging", "--cache", str(path)]
        + ["--base-url", "http://127.0.0.1:9"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"lwbatch: error: {path}: {message}")
    assert not out.exists()


def test_a_run_killed_mid_way_leaves_the_cache_usable(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = revisions(tmp_path, list(range(1, 401)))
    cache = tmp_path / "c.db"
    out = tmp_path / "out.parquet"
    args = [sys.executable, "-m", "lwbatch", "score", str(inp), "-o", str(out), "-q"]
    args += ["-m", "enwiki-damaging", "--cache", str(cache), "--rate", "2000/s"]
    env = {k: v for k, v in os.environ.items() if k != "LIFTWING_TOKEN"}
    with emulator(latency=Latency("uniform", 0.005, 0.02)) as (emu, base_url):
        args += ["--base-url", base_url, "--concurrency", "8"]
        kill_after_requests(args, env, emu, 150)
        kept = {e.model: e.trusted for e in SqliteScoreCache(cache).models()}["enwiki-damaging"]
        before = emu.stats.requests
        assert 0 < kept <= before
        done = subprocess.run(args + ["--restart"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        # The rerun asks only what the cache lacks (answers in flight at the kill, and
        # those received but not committed yet, are asked again).
        assert emu.stats.requests - before == 400 - kept
    assert pq.read_table(out).num_rows == 400


def test_a_run_that_grows_is_refused_then_restarts_asking_only_the_rest(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = revisions(tmp_path, list(range(1, 21)))
    out = tmp_path / "out.parquet"
    with emulator() as (emu, base_url):
        args = ["score", str(inp), "-o", str(out), "--cache", str(tmp_path / "c.db")]
        args += ["--base-url", base_url, "--rate", "unlimited"]
        assert main([*args, "-m", "enwiki-damaging"]) == 0
        capsys.readouterr()
        both = [*args, "-m", "enwiki-damaging,enwiki-goodfaith"]
        assert main(both) == 2
        assert capsys.readouterr().err == (
            f"lwbatch: error: {out} belongs to a run with another model list "
            "(enwiki-damaging instead of enwiki-damaging, enwiki-goodfaith); rerun "
            "it as it was, choose another output, or pass --restart to replace it; with "
            "--restart the answers --cache holds are not asked again\n"
        )
        assert main([*both, "--restart"]) == 0
        assert dict(emu.stats.by_model) == {"enwiki-damaging": 20, "enwiki-goodfaith": 20}
        err = capsys.readouterr().err
    assert "the whole input: 20 answers cached, 20 requests: " in err
    assert pq.read_table(out).num_rows == 20


def test_a_damaged_value_is_one_line_not_an_internal_error(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    path = tmp_path / "c.db"
    cache = SqliteScoreCache(path)
    cache.put("enwiki-damaging", [("enwiki", 1, scored(0.7, "0.5.1"))])
    cache.close()
    with sqlite3.connect(path) as db:  # valid SQLite, a value that is not JSON
        db.execute("UPDATE answers SET probability = '{\"true\": 0.7x}'")
    inp = revisions(tmp_path, [1])
    with emulator() as (emu, base_url):
        code = main(
            ["score", str(inp), "-o", str(tmp_path / "o.parquet"), "-m", "enwiki-damaging"]
            + ["--cache", str(path), "--base-url", base_url, "-q"]
        )
        assert emu.stats.requests == 0
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"lwbatch: error: {path}: a damaged entry of enwiki-damaging (enwiki 1: ")
    assert err.endswith("prune that model's entries from the cache, or give another cache\n")
    assert main(["cache", "export", str(path), "-o", str(tmp_path / "e.parquet")]) == 2
    assert not (tmp_path / "e.parquet").exists()


def test_the_cache_may_not_be_the_output_or_the_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = revisions(tmp_path, [1])
    out = tmp_path / "o.parquet"
    for cache in (out, inp):
        code = main(
            ["score", str(inp), "-o", str(out), "-m", "enwiki-damaging", "--cache", str(cache)]
            + ["--base-url", "http://127.0.0.1:9"]
        )
        assert code == 2
        assert capsys.readouterr().err == (
            f"lwbatch: error: --cache {cache} is also the input or the output; give the cache "
            "a file of its own\n"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
