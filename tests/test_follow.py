"""`lwbatch follow` against the emulator's revision-create stream.

The expected revisions come from reading the stream here with a plain HTTP client and a
few lines of SSE parsing, not from lwbatch's follower or the emulator's helpers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pyarrow.parquet as pq
import pytest

from lwbatch import Connection, Endpoint
from lwbatch.streaming import Filters, StreamPosition, follow
from lwbatch.testing.emulator import EmulatorConfig, running
from lwbatch.testing.stream import StreamConfig

STREAM = "/v2/stream/mediawiki.revision-create"
pytestmark = pytest.mark.xdist_group("follow")


def stream_events(url: str, since: int, until: int) -> list[dict[str, Any]]:
    """Every event the stream serves from `since` up to (not with) the first one made at
    `until` or later, in order, redeliveries (and, after a dropped connection, the events
    of the last millisecond) included."""
    events: list[dict[str, Any]] = []
    for _ in range(1000):
        with httpx.stream("GET", url + STREAM, params={"since": str(since)}, timeout=30) as r:
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[len("data: ") :])
                moment = datetime.fromisoformat(event["meta"]["dt"].replace("Z", "+00:00"))
                since = int(moment.timestamp() * 1000)
                if since >= until:
                    return events
                events.append(event)
    raise AssertionError("the stream keeps ending")


def wanted(events: list[dict[str, Any]], wikis: set[str]) -> set[tuple[str, int]]:
    return {
        (e["database"], e["rev_id"])
        for e in events
        if e["meta"]["domain"] != "canary" and e["database"] in wikis and e["page_namespace"] == 0
    }


def output_keys(directory: Path) -> list[tuple[str, int]]:
    keys: list[tuple[str, int]] = []
    for part in sorted(directory.glob("date=*/part-*.parquet")):
        table = pq.read_table(part, columns=["wiki_db", "rev_id"])
        keys += zip(table["wiki_db"].to_pylist(), table["rev_id"].to_pylist(), strict=True)
    return keys


def here(url: str, models: list[str], filters: Filters, **options: Any) -> Any:
    """lwbatch.follow against the emulator at `url`, budget off."""
    connection = Connection(endpoint=Endpoint(base_url=url))
    return follow(
        models, filters=filters, stream=url + STREAM, connection=connection, rate="unlimited",
        **options,
    )  # fmt: skip


@pytest.fixture
def stream_emulator() -> Iterator[tuple[Any, str]]:
    # 400 events/s, 2 per millisecond id; an hour of history to replay at once.
    config = EmulatorConfig(latency=_latency(), stream=StreamConfig(rate=400.0, per_ms=2))
    with running(config) as found:
        yield found


def _latency() -> Any:
    from lwbatch.testing.emulator import Latency

    return Latency.parse("0.002")


def follow_command(url: str, out: Path, since: int, until: int | str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "lwbatch", "follow", "-m", "{wiki}-damaging",
        "--wiki", "enwiki,dewiki", "-o", str(out), "--since", str(since),
        "--until", str(until), "--stream-url", url + STREAM, "--endpoint", url,
        "--rate", "unlimited", "--roll", "0.1s", "-q", *extra,
    ]  # fmt: skip


def test_a_follower_killed_and_restarted_writes_every_revision_once(
    stream_emulator: tuple[Any, str], tmp_path: Path
) -> None:
    emu, url = stream_emulator
    since = emu.stream.start_ms + 1_000
    until = since + 20_000  # 8,000 events
    out = tmp_path / "scores"
    command = follow_command(url, out, since, until)
    env = {k: v for k, v in os.environ.items() if k != "LIFTWING_TOKEN"}
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        # Handshake: the kill lands once three parts are out, mid-run.
        while len(list(out.glob("date=*/part-*.parquet"))) < 3:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    killed_at = len(output_keys(out))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    expected = wanted(stream_events(url, since, until), {"enwiki", "dewiki"})
    keys = output_keys(out)
    assert 0 < killed_at < len(expected)
    assert len(keys) == len(set(keys))  # no duplicate
    assert set(keys) == expected  # no gap
    connections = httpx.get(url + "/_emulator/stats").json()["stream"]["resumed_from"]
    # The restart resumed from the position stored with the parts, not from --since.
    assert connections[0] == f"since={since}"
    assert connections[1].startswith('[{"topic"')
    assert len(connections) == 3  # two runs, and this test's own reading


def test_dropped_connections_resume_without_a_gap_and_filtered_events_cost_nothing(
    tmp_path: Path,
) -> None:
    config = EmulatorConfig(stream=StreamConfig(rate=400.0, per_ms=3, drop_after=97))
    with running(config) as (emu, url):
        since = emu.stream.start_ms + 500
        until = since + 5_000  # 2,000 events

        async def main() -> list[tuple[str, int]]:
            enwiki = Filters(wikis=frozenset({"enwiki"}))
            async with here(url, ["enwiki-damaging"], enwiki, since=since, until=until) as rows:
                found = [(f.row.key.wiki, f.row.key.rev_id) async for f in rows if f.row.key]
                counts = rows.counts
            assert counts.dropped["canary"] == 40
            assert counts.dropped["seen already"] > 0
            return found

        keys = anyio.run(main)
        stats = httpx.get(url + "/_emulator/stats").json()
        expected = wanted(stream_events(url, since, until), {"enwiki"})
    assert sorted(keys) == sorted(expected)
    # One request per revision: canaries, other wikis and redeliveries cost none.
    assert stats["requests"] == len(expected)
    resumed = stats["stream"]["resumed_from"]  # read before this test's own reading
    assert len(resumed) >= 2_000 // 97
    assert resumed[0] == f"since={since}"
    assert all(r.startswith('[{"topic"') for r in resumed[1:])


def test_a_position_resumes_python_callers_without_repeats(tmp_path: Path) -> None:
    # Every wiki and namespace: each millisecond's events all have rows, so a resume,
    # which starts at the first event of the position's millisecond, meets rows the
    # first part holds (revertrisk answers Wikipedias; the others get an error row).
    config = EmulatorConfig(stream=StreamConfig(rate=400.0, per_ms=4))
    with running(config) as (emu, url):
        since = emu.stream.start_ms + 200
        until = since + 3_000
        options: dict[str, Any] = {
            "filters": Filters(wikis=None, namespaces=None),
            "stream": url + STREAM,
            "connection": Connection(endpoint=Endpoint(base_url=url)),
            "rate": "unlimited",
            "until": until,
        }
        model = ["revertrisk-language-agnostic"]

        async def run(resume: bytes | None, **limits: Any) -> tuple[list[tuple[str, int]], bytes]:
            start: dict[str, Any] = {"since": since}
            if resume is not None:
                start = {"resume": StreamPosition.from_json(resume)}
            found: list[tuple[str, int]] = []
            async with follow(model, **start, **limits, **options) as rows:
                async for batch in rows.batches(seconds=60.0, rows=10_000):
                    found += [(r.key.wiki, r.key.rev_id) for r, _ in batch.rows if r.key]
                    position = batch.position.to_json()
            return found, position

        # One revision, then one more: both of the first millisecond (4 events share
        # one), so the second run resumes there, drops the first and stores a position
        # that must still hold it; then the rest.
        first, position = anyio.run(partial(run, None, max_revisions=1))
        second, position = anyio.run(partial(run, position, max_revisions=1))
        rest, _ = anyio.run(partial(run, position))
        events = stream_events(url, since, until)
    expected = {(e["database"], e["rev_id"]) for e in events if e["meta"]["domain"] != "canary"}
    written = first + second + rest
    assert len(first) == len(second) == 1
    assert len(written) == len(set(written))
    assert set(written) == expected


def test_a_sample_is_the_same_on_every_run_and_counted(tmp_path: Path) -> None:
    with running(EmulatorConfig(stream=StreamConfig(rate=400.0))) as (emu, url):
        since = emu.stream.start_ms
        until = since + 5_000

        async def sampled() -> tuple[set[tuple[str, int]], int]:
            quarter = Filters(wikis=frozenset({"enwiki"}), sample=0.25)
            async with here(url, ["enwiki-damaging"], quarter, since=since, until=until) as rows:
                keys = {(f.row.key.wiki, f.row.key.rev_id) async for f in rows if f.row.key}
                return keys, rows.counts.dropped["sampled out"]

        one, out_one = anyio.run(sampled)
        two, out_two = anyio.run(sampled)
        expected = wanted(stream_events(url, since, until), {"enwiki"})
    assert one == two and out_one == out_two
    assert one < expected
    assert len(one) + out_one == len(expected)
    assert 0.15 < len(one) / len(expected) < 0.35


def test_a_follower_stopped_longer_than_the_retention_stops_at_the_gap(
    stream_emulator: tuple[Any, str], tmp_path: Path
) -> None:
    emu, url = stream_emulator
    since = emu.stream.start_ms + 1_000
    out = tmp_path / "scores"
    first = subprocess.run(
        follow_command(url, out, since, since + 1_000), capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    # The same stream, now keeping only its last 10 minutes: the position is older.
    short = EmulatorConfig(stream=StreamConfig(rate=400.0, per_ms=2, retention=600.0))
    with running(short) as (_, short_url):
        later = since + 3_600_000
        gap = subprocess.run(
            follow_command(short_url, out, since, later), capture_output=True, text=True
        )
        assert gap.returncode == 1
        assert "the stream no longer holds the events from" in gap.stderr
        assert gap.stderr.strip().endswith("give --accept-gap to go on from there")
        assert "Traceback" not in gap.stderr
        parts = len(list(out.glob("date=*/part-*.parquet")))
        accepted = subprocess.run(
            follow_command(short_url, out, since, "now", "--max-revisions", "50", "--accept-gap"),
            capture_output=True,
            text=True,
        )
        assert accepted.returncode == 0, accepted.stderr
        assert len(list(out.glob("date=*/part-*.parquet"))) > parts


def test_a_restart_with_other_options_is_refused(
    stream_emulator: tuple[Any, str], tmp_path: Path
) -> None:
    emu, url = stream_emulator
    since = emu.stream.start_ms
    out = tmp_path / "scores"
    assert subprocess.run(follow_command(url, out, since, since + 500)).returncode == 0
    other = follow_command(url, out, since, since + 1_000)
    other[other.index("enwiki,dewiki")] = "enwiki"
    refused = subprocess.run(other, capture_output=True, text=True)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"lwbatch: error: --output {out}: an earlier follow wrote it with other wikis; "
        "rerun it as it was, or choose another directory"
    ]


def test_sigterm_writes_the_last_part_and_exits_143_and_the_rerun_goes_on(
    stream_emulator: tuple[Any, str], tmp_path: Path
) -> None:
    emu, url = stream_emulator
    since = emu.stream.start_ms + 1_000
    far = since + 3_000_000  # not reached: the signal ends the first run
    out = tmp_path / "scores"
    proc = subprocess.Popen(follow_command(url, out, since, far), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("date=*/part-*.parquet"))) < 2:  # handshake: parts out
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == (
        "lwbatch: error: stopped by SIGTERM; the output holds every revision up to its "
        "position: rerun the same command to go on"
    )
    first = output_keys(out)
    stopped = json.loads((out / "_lwbatch_follow.json").read_bytes())["position"]["time_ms"]
    until = stopped + 2_000
    done = subprocess.run(
        follow_command(url, out, since, until), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    keys = output_keys(out)
    assert len(first) < len(keys) == len(set(keys))
    assert set(keys) == wanted(stream_events(url, since, until), {"enwiki", "dewiki"})


def test_a_follower_and_a_score_run_of_one_identity_stay_inside_the_budget_together(
    tmp_path: Path,
) -> None:
    from bisect import bisect_left

    budget = "100/2s"
    config = EmulatorConfig(
        latency=_latency(), budget=_rate(budget), stream=StreamConfig(rate=400.0)
    )
    with running(config) as (emu, url):
        revs = tmp_path / "revs.csv"
        revs.write_text("rev_id\n" + "\n".join(str(i) for i in range(1, 151)) + "\n")
        score = [
            sys.executable, "-m", "lwbatch", "score", str(revs), "-o",
            str(tmp_path / "backfill.parquet"), "-m", "enwiki-damaging", "--endpoint", url,
            "--rate", budget, "-q",
        ]  # fmt: skip
        since = emu.stream.start_ms
        follower = follow_command(url, tmp_path / "live", since, since + 60_000)
        follower[follower.index("unlimited")] = budget
        follower += ["--max-revisions", "150"]
        procs = [subprocess.Popen(c, stderr=subprocess.PIPE, text=True) for c in (score, follower)]
        results = [(p.communicate(timeout=120)[1], p.returncode) for p in procs]
        for err, code in results:
            assert code == 0, err
        times = sorted(emu.stats.arrivals)
        statuses = dict(emu.stats.by_status)
    # Together, the one budget in any 2 s; a request held up more than the window's
    # margin (15 ms) on its way, on a loaded machine, may make one 429, as in
    # test_shared_processes. Each run alone at the full budget makes many.
    assert statuses["200"] == 300
    assert statuses.get("429", 0) <= 1
    assert max(bisect_left(times, t + 2.0) - i for i, t in enumerate(times)) <= 101


def _rate(text: str) -> Any:
    from lwbatch import Rate

    return Rate.parse(text)


def test_recentchange_events_name_their_revision_and_log_events_none() -> None:
    from lwbatch.streaming.events import parse_event

    edit = {
        "meta": {"dt": "2026-12-08T10:00:00.250Z", "domain": "de.wikipedia.org"},
        "type": "edit",
        "wiki": "dewiki",
        "namespace": 0,
        "bot": True,
        "title": "Berlin",
        "revision": {"old": 99, "new": 100},
    }
    log_event = {**edit, "type": "log", "revision": None}
    event = parse_event("[]", json.dumps(edit), "recentchange")
    assert (event.key, event.namespace, event.bot, event.canary) == (
        ("dewiki", 100),
        0,
        True,
        False,
    )
    assert event.time_ms == 1_796_724_000_250
    assert parse_event("[]", json.dumps(log_event), "recentchange").key is None
    with pytest.raises(ValueError, match="an event of another shape"):
        parse_event("[]", json.dumps({"meta": {}}), "revision-create")


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--since", "yesterday"], "--since: 'yesterday' is not a time"),
        (["--roll", "soon"], "--roll: 'soon' is not a duration (30s, 5m, 1h)"),
        (["--sample", "1.5"], "--sample must be a share in (0, 1], got 1.5"),
        (["--namespace", "main"], "--namespace: 'main' is not a list of namespace numbers"),
        (["--namespace", "99999999999"], "--namespace: '99999999999' is not a list of"),
        (["--wiki", "en"], "--wiki: en is no wiki's database name (did you mean enwiki?)"),
        (["--progress-every", "0"], "--progress-every must be > 0 seconds, got 0"),
        (["--stream-url", "ftp://x.invalid/s"], "--stream-url 'ftp://x.invalid/s' is not an"),
        (["--until", "now"], "--until is not after now (no --since), where a new output"),
        (["--since", "2030-01-01T00:00:00Z", "--until", "now"], "--until is not after --since"),
    ],
)
def test_bad_options_get_one_line_and_exit_2(tmp_path: Path, extra: list[str], said: str) -> None:
    url = [] if "--stream-url" in extra else ["--stream-url", "http://127.0.0.1:9/v2/stream/x"]
    command = [
        sys.executable, "-m", "lwbatch", "follow", "-m", "enwiki-damaging",
        "-o", str(tmp_path / "out"), "--endpoint", "http://127.0.0.1:9", *url, *extra,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], done.stderr
    assert not (tmp_path / "out").exists()


def test_a_template_model_needs_the_wikis_named() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lwbatch", "follow", "-m", "{wiki}-damaging", "-o", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "lwbatch: error: --wiki: {wiki}-damaging scores more than one wiki; name the wikis "
        "to follow (--wiki enwiki,dewiki) or --wiki all"
    )


def test_a_stream_faster_than_the_budget_grows_the_lag_not_the_memory(tmp_path: Path) -> None:
    # 600 events/s, 4 in 6 of them revisions of the chosen wikis; a budget of 100/s.
    config = EmulatorConfig(latency=_latency(), stream=StreamConfig(rate=600.0))
    with running(config) as (_, url):
        command = [
            sys.executable, "-m", "lwbatch", "follow", "-m", "{wiki}-damaging",
            "--wiki", "enwiki,dewiki,frwiki", "-o", str(tmp_path / "out"),
            "--stream-url", url + STREAM, "--endpoint", url, "--rate", "100/1s",
            "--roll", "1s", "--progress-every", "1",
        ]  # fmt: skip
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        lags: list[tuple[float, str | None]] = []
        rss: list[float] = []
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                found = re.search(r"lag ([\d,.]+) s(?: \((\w+)\))?", line)
                if found:
                    lags.append((float(found.group(1).replace(",", "")), found.group(2)))
                    status = Path(f"/proc/{proc.pid}/status").read_text()
                    rss.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)  # type: ignore[union-attr]
                if len(lags) == 8:
                    break
            proc.send_signal(signal.SIGTERM)
        finally:
            proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert lags[-1][0] > lags[1][0] + 1.0
    assert lags[-1][1] == "growing"
    # Reading stops while scoring lags: memory does not follow the stream.
    assert max(rss[4:]) < rss[1] + 15


def test_the_cache_a_follower_keeps_makes_a_later_score_of_its_revisions_free(
    stream_emulator: tuple[Any, str], tmp_path: Path
) -> None:
    import pyarrow as pa

    emu, url = stream_emulator
    since = emu.stream.start_ms + 1_000
    out, cache = tmp_path / "scores", tmp_path / "scores.sqlite"
    followed = subprocess.run(
        follow_command(url, out, since, since + 2_000, "--cache", str(cache)),
        capture_output=True,
        text=True,
    )
    assert followed.returncode == 0, followed.stderr
    keys = output_keys(out)
    revisions = tmp_path / "revisions.parquet"
    pq.write_table(
        pa.table({"wiki_db": [w for w, _ in keys], "rev_id": [r for _, r in keys]}), revisions
    )
    before = emu.stats.requests
    scored = subprocess.run(
        [
            sys.executable,
            "-m",
            "lwbatch",
            "score",
            str(revisions),
            "-o",
            str(tmp_path / "backfill.parquet"),
            "-m",
            "{wiki}-damaging",
            "--wiki-column",
            "wiki_db",
            "--endpoint",
            url,
            "--rate",
            "unlimited",
            "--cache",
            str(cache),
            "-q",
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert scored.returncode == 0, scored.stderr
    assert len(keys) > 100
    assert emu.stats.requests == before  # every answer came from the cache
    assert pq.read_table(tmp_path / "backfill.parquet").num_rows == len(keys)


def test_a_part_newer_than_the_position_file_wins_on_restart(
    stream_emulator: tuple[Any, str], tmp_path: Path
) -> None:
    emu, url = stream_emulator
    since = emu.stream.start_ms + 1_000
    out = tmp_path / "scores"

    def run(until: int) -> None:
        done = subprocess.run(
            follow_command(url, out, since, until), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr

    run(since + 1_000)
    older = (out / "_lwbatch_follow.json").read_bytes()
    run(since + 2_000)
    # A crash between a part's rename and the position file's: the file is behind.
    (out / "_lwbatch_follow.json").write_bytes(older)
    run(since + 3_000)
    keys = output_keys(out)
    assert len(keys) == len(set(keys))
    assert set(keys) == wanted(stream_events(url, since, since + 3_000), {"enwiki", "dewiki"})


def test_a_second_follower_of_one_directory_is_refused(
    stream_emulator: tuple[Any, str], tmp_path: Path
) -> None:
    emu, url = stream_emulator
    out = tmp_path / "scores"
    first = subprocess.Popen(
        follow_command(url, out, emu.stream.start_ms, emu.stream.start_ms + 3_000_000),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("date=*/part-*.parquet")):  # handshake: it writes
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        second = subprocess.run(
            follow_command(url, out, emu.stream.start_ms, emu.stream.start_ms + 1_000),
            capture_output=True,
            text=True,
        )
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert second.returncode == 2
    assert second.stderr.strip() == (
        f"lwbatch: error: --output {out}: another lwbatch follow is writing it; stop that one first"
    )
