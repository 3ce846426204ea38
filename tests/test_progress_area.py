"""A Spark job's progress area on its own, without Spark: what tasks commit, what a
rerun or a retried attempt finds, and how many files a long job leaves."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch.durability.progress import ProgressArea
from lwbatch.errors import UsageError
from lwbatch.keys import RowKey
from lwbatch.results import ErrorType, Score

LAYOUT = "rev_id revision_id (bigint), wiki wiki_db (dbname), lang en"


def ok(p: float) -> Score:
    return Score(True, {"true": p, "false": 1 - p}, "3", latency_ms=12.0, attempts=1)


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_answers_committed_by_one_attempt_are_found_by_the_next(tmp_path: Path) -> None:
    area = ProgressArea.at(tmp_path / "progress")
    assert area.prepare(LAYOUT, 4, restart=False) == 4
    first = area.partition(2, "run1.6.0")
    assert first.load(["enwiki-damaging"]).answers == 0
    first.add("enwiki-damaging", [(RowKey("enwiki", 1), ok(0.25)), (RowKey("enwiki", 2), ok(0.5))])
    first.add("dewiki-damaging", [(RowKey("dewiki", 1), ok(0.75))])
    first.add(
        "enwiki-damaging",
        [(RowKey("enwiki", 3), Score.failed(ErrorType.SERVER_ERROR, "500 from the server"))],
    )
    first.commit(first.take(), requests=4)
    again = area.partition(2, "run1.6.1")
    loaded = again.load(["enwiki-damaging", "dewiki-damaging"])
    # The server's failure is asked again; the answers are kept as they were.
    assert loaded.answers == 3
    assert loaded.state.retried == 1
    assert loaded.state.partial == {
        RowKey("enwiki", 1): {"enwiki-damaging": ok(0.25)},
        RowKey("enwiki", 2): {"enwiki-damaging": ok(0.5)},
        RowKey("dewiki", 1): {"dewiki-damaging": ok(0.75)},
    }
    assert loaded.requests == {"run1.6.0": 4}
    # Another partition's files are not read.
    assert area.partition(1, "run1.6.0").load(["enwiki-damaging"]).answers == 0
    # A later answer that is final wins over a failure of the service.
    again.add("enwiki-damaging", [(RowKey("enwiki", 3), ok(0.125))])
    again.commit(again.take(), requests=1)
    third = area.partition(2, "run2.3.0").load(["enwiki-damaging"])
    assert third.state.partial[RowKey("enwiki", 3)] == {"enwiki-damaging": ok(0.125)}
    assert third.state.retried == 0
    assert third.requests == {"run1.6.0": 4, "run1.6.1": 1}


def test_an_attempts_files_merge_like_a_binary_counter(tmp_path: Path) -> None:
    area = ProgressArea.at(tmp_path / "progress")
    area.prepare(LAYOUT, 1, restart=False)
    task = area.partition(0, "run.1.0")
    task.load(["m"])
    counts = []
    for n in range(1, 13):
        task.add("m", [(RowKey("enwiki", n), ok(0.5))])
        task.commit(task.take(), requests=n)
        counts.append(len(files(tmp_path / "progress" / "p-00000")))
    # popcount(1..12): a day of 5-second commits (17,280) leaves at most 15 files.
    assert counts == [1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2]
    # Nothing new, nothing written.
    task.commit(task.take(), requests=12)
    assert len(files(tmp_path / "progress" / "p-00000")) == 2
    loaded = area.partition(0, "run.1.1").load(["m"])
    assert sorted(k.rev_id for k in loaded.state.partial) == list(range(1, 13))
    assert loaded.requests == {"run.1.0": 12}
    # The next attempt merged the earlier ones' files into one.
    assert files(tmp_path / "progress" / "p-00000") == ["run.1.1-base.parquet"]


def test_hidden_and_unreadable_files_cost_requests_not_the_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    area = ProgressArea.at(tmp_path / "progress")
    area.prepare(LAYOUT, 1, restart=False)
    task = area.partition(0, "run.1.0")
    task.load(["m"])
    task.add("m", [(RowKey("enwiki", 7), ok(0.5))])
    task.commit(task.take(), requests=1)
    directory = tmp_path / "progress" / "p-00000"
    (directory / ".half-written.tmp").write_bytes(b"PAR1")
    (directory / "other.parquet").write_bytes(b"not parquet")
    loaded = area.partition(0, "run.1.1").load(["m"])
    assert list(loaded.state.partial) == [RowKey("enwiki", 7)]
    assert "other.parquet is unreadable" in caplog.text


def test_a_rerun_keeps_the_partitions_the_area_started_with(tmp_path: Path) -> None:
    area = ProgressArea.at(tmp_path / "progress")
    assert area.prepare(LAYOUT, 8, restart=False) == 8
    # More slots now: the keys still meet their answers in the same 8 partitions.
    assert area.prepare(LAYOUT, 16, restart=False) == 8
    with pytest.raises(UsageError) as info:
        area.prepare("rev_id rev_id (string), wiki none, lang en", 8, restart=False)
    assert str(info.value) == (
        f"the progress area {tmp_path / 'progress'} holds the progress of another job "
        f"({LAYOUT}; this one is rev_id rev_id (string), wiki none, lang en): pass "
        "`restart=True` to discard it, or choose another place"
    )
    task = area.partition(3, "run.1.0")
    task.load(["m"])
    task.add("m", [(RowKey("enwiki", 1), ok(0.5))])
    task.commit(task.take(), requests=1)
    assert area.prepare("rev_id rev_id (string), wiki none, lang en", 2, restart=True) == 2
    assert files(tmp_path / "progress") == ["manifest.json"]
    area.remove()
    assert not (tmp_path / "progress").exists()


def test_a_place_that_is_not_a_progress_area_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"x": [1]}), tmp_path / "data" / "x.parquet")
    with pytest.raises(UsageError) as info:
        ProgressArea.at(tmp_path / "data").prepare(LAYOUT, 2, restart=False)
    assert str(info.value) == (
        f"`progress` {tmp_path / 'data'} exists and is not an lwbatch progress area; "
        "choose another place"
    )
    assert files(tmp_path / "data") == ["x.parquet"]
    with pytest.raises(UsageError) as info:
        ProgressArea.at(tmp_path / "no" / "such").prepare(LAYOUT, 2, restart=False)
    assert str(info.value) == f"`progress` {tmp_path / 'no' / 'such'}: its directory does not exist"
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "manifest.json").write_text("{")
    with pytest.raises(UsageError) as info:
        ProgressArea.at(tmp_path / "damaged").prepare(LAYOUT, 2, restart=False)
    assert str(info.value).endswith("its manifest is damaged; pass `restart=True` to discard it")
    # The answers the area holds, for the cache at the end of a job.
    area = ProgressArea.at(tmp_path / "progress")
    area.prepare(LAYOUT, 2, restart=False)
    for index in (0, 1):
        task = area.partition(index, "run.1.0")
        task.load(["m"])
        task.add("m", [(RowKey("enwiki", 10 + index), ok(0.5))])
        task.commit(task.take(), requests=1)
    assert sorted((m, k) for m, k, _ in area.answers()) == [
        ("m", RowKey("enwiki", 10)),
        ("m", RowKey("enwiki", 11)),
    ]


def test_commits_without_answers_merge_and_keep_the_requests(tmp_path: Path) -> None:
    # Answers slower than the commits (a model timing out, retries with backoff).
    area = ProgressArea.at(tmp_path / "progress")
    area.prepare(LAYOUT, 1, restart=False)
    task = area.partition(0, "run.1.0.7.0")
    task.load(["m"])
    for requests in (3, 5, 9, 12):
        task.commit(task.take(), requests=requests)
    assert len(files(tmp_path / "progress" / "p-00000")) == 1
    loaded = area.partition(0, "run.1.1.8.0").load(["m"])
    assert (loaded.answers, loaded.requests) == (0, {"run.1.0.7.0": 12})


def test_a_commit_that_failed_gives_its_answers_to_the_next(tmp_path: Path) -> None:
    area = ProgressArea.at(tmp_path / "progress")
    area.prepare(LAYOUT, 1, restart=False)
    task = area.partition(0, "run.1.0.7.0")
    task.load(["m"])
    task.add("m", [(RowKey("enwiki", 1), ok(0.5))])
    taken = task.take()
    task.put_back(taken)  # as the task does when the file system refused the write
    task.add("m", [(RowKey("enwiki", 2), ok(0.5))])
    task.commit(task.take(), requests=2)
    loaded = area.partition(0, "run.1.1.8.0").load(["m"])
    assert sorted(k.rev_id for k in loaded.state.partial) == [1, 2]


def test_restart_and_remove_touch_only_a_progress_area(tmp_path: Path) -> None:
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for restart in (False, True):
        with pytest.raises(UsageError) as info:
            ProgressArea.at(mine).prepare(LAYOUT, 2, restart=restart)
        assert str(info.value) == (
            f"`progress` {mine} exists and is not an lwbatch progress area; choose another place"
        )
    with pytest.raises(UsageError) as info:
        ProgressArea.at(mine).remove()
    assert str(info.value) == f"`progress` {mine} is not an lwbatch progress area; not removed"
    assert files(mine) == ["thesis.tex"]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UsageError) as info:
        ProgressArea.at(tmp_path / "a-file").prepare(LAYOUT, 2, restart=False)
    assert str(info.value) == f"`progress` {tmp_path / 'a-file'} is a file; give a directory"
    # An empty directory may be the area.
    (tmp_path / "empty").mkdir()
    assert ProgressArea.at(tmp_path / "empty").prepare(LAYOUT, 3, restart=True) == 3


def test_the_preflight_answers_are_kept_for_the_reruns(tmp_path: Path) -> None:
    from lwbatch.durability.answer_log import decode_answer, encode_answer

    area = ProgressArea.at(tmp_path / "progress")
    assert area.read_known() == []
    area.prepare(LAYOUT, 2, restart=False)
    lines = [encode_answer("enwiki-damaging", RowKey("enwiki", 5), ok(0.5))]
    area.write_known(lines)
    assert [decode_answer(x) for x in area.read_known()] == [
        ("enwiki-damaging", RowKey("enwiki", 5), ok(0.5))
    ]


def test_the_cache_hands_each_keys_newest_answer_as_get_does(tmp_path: Path) -> None:
    from lwbatch.cache import SqliteScoreCache
    from lwbatch.durability.answer_log import decode_answer

    cache = SqliteScoreCache(tmp_path / "cache.sqlite")
    model = "enwiki-damaging"
    cache.put(model, [("enwiki", 1, Score(True, {"true": 0.75, "false": 0.25}, "2"))])
    cache.put(model, [("enwiki", 2, Score.failed(ErrorType.NOT_FOUND, "no such revision"))])
    cache.put(model, [("enwiki", 3, Score(False, {"true": 0.125, "false": 0.875}, "2"))])
    # Later, the same key answered as deleted: the newer entry is the one used.
    cache.put(model, [("enwiki", 3, Score.failed(ErrorType.DELETED, "deleted"))])
    cache.put("other-model", [("enwiki", 1, Score(1, None, "9"))])
    lines = [x for batch in cache.answer_lines([model]) for x in batch]
    decoded = {(m, w, r): decode_answer(line.encode()) for m, w, r, line in lines}
    assert sorted(decoded) == [(model, "enwiki", 1), (model, "enwiki", 2), (model, "enwiki", 3)]
    for (m, w, r), answer in decoded.items():
        assert answer == (m, RowKey(w, r), cache.get(m, w, r))
    assert cache.get(model, "enwiki", 3) == Score.failed(ErrorType.DELETED, "deleted")
    cache.close()


def test_the_area_tells_what_the_tasks_kept_and_sent_so_far(tmp_path: Path) -> None:
    area = ProgressArea.at(tmp_path / "progress")
    area.prepare(LAYOUT, 2, restart=False)
    assert area.tally() == (0, 0)
    first = area.partition(0, "run.1.0.7.0")
    first.load(["m"])
    first.add("m", [(RowKey("enwiki", 1), ok(0.5)), (RowKey("enwiki", 2), ok(0.5))])
    first.add_for_cache("enwiki-damaging", [("enwiki", 1, ok(0.5))])  # not an answer more
    first.commit(first.take(), requests=4)
    first.add("m", [(RowKey("enwiki", 3), ok(0.5))])
    first.commit(first.take(), requests=6)
    other = area.partition(1, "run.1.0.8.1")
    other.load(["m"])
    other.add("m", [(RowKey("dewiki", 1), ok(0.5))])
    other.commit(other.take(), requests=2)
    assert area.tally() == (4, 8)
