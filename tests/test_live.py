"""What a running score shows: progress lines in a log, JSON lines for schedulers, the
budget window, and what to do next at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lwbatch.cli.live import LiveView, next_steps
from lwbatch.config import Budget, Rate
from lwbatch.engine.stats import RunReport, RunStats
from tests.conftest import EmulatorFactory


class Bar:
    """tqdm's interface, as the view uses it, when stderr is not a terminal."""

    disable = True

    def update(self, n: int) -> None:
        pass

    def reset(self, total: int | None = None) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        raise AssertionError("no postfix without a terminal")


def csv_input(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / "in.csv"
    path.write_text("rev_id\n" + "".join(f"{r}\n" for r in range(1, rows + 1)))
    return path


def report(stats: RunStats, elapsed: float) -> RunReport:
    return RunReport.from_stats(
        stats,
        models=("enwiki-damaging", "enwiki-goodfaith"),
        elapsed=elapsed,
        budget="50000/3600s",
        budget_rate=50000 / 3600,
    )


def test_the_window_counts_the_grants_of_the_budgets_longest_period() -> None:
    now = [100.0]
    view = LiveView(bar=Bar(), log_json=True, every=5.0, clock=lambda: now[0])

    class Scorer:
        budget = Budget(windows=(Rate(10, 60.0), Rate(2, 1.0)))
        specs: list[Any] = []
        stats = RunStats()

    view.attach(Scorer(), total=40)  # type: ignore[arg-type]
    for t in (100.0, 130.0, 150.0, 159.0, 161.0):
        view.on_send(t)
    view.advance(10)
    now[0] = 161.0
    snap = view.snapshot()
    # 100.0 left the 60 s window when 161.0 came: 4 of 10.
    assert snap["window"] == {"period_s": 60.0, "budget": 10, "sent": 4, "used": 0.4}
    # 10 of 40 rows in 61 s: the other 30 at that rate.
    assert (snap["rows_done"], snap["rows_total"], snap["eta_s"]) == (10, 40, 183)


def test_the_end_says_what_to_do_next() -> None:
    stats = RunStats()
    stats.errors[("enwiki-damaging", "transient_error")] = 70
    stats.errors[("enwiki-damaging", "rate_limited")] = 1
    stats.errors[("enwiki-goodfaith", "model_not_deployed")] = 5
    stats.requests_by_outcome["429"] = 12
    assert next_steps(report(stats, 30.0)) == [
        "71 transient failures (5xx, timeouts, 429s past the retries): run the same command "
        "again to retry them",
        "not deployed on Lift Wing for some or all rows: enwiki-goodfaith; `lwbatch models` "
        "lists the names, and a 404 means the wiki has no such model",
        "12 requests were answered 429 (over the gateway's budget, and each counted against "
        "it): lower --rate, or check --tier against your token (`lwbatch token`)",
    ]
    assert next_steps(report(RunStats(), 30.0)) == []
    one = RunStats()
    one.errors[("enwiki-damaging", "transient_error")] = 1
    one.requests_by_outcome["429"] = 1
    assert next_steps(report(one, 30.0)) == [
        "1 transient failure (5xx, timeouts, 429s past the retries): run the same command "
        "again to retry it",
        "1 request was answered 429 (over the gateway's budget, and each counted against "
        "it): lower --rate, or check --tier against your token (`lwbatch token`)",
    ]


def test_the_end_says_a_model_failing_a_wiki_is_asked_again() -> None:
    stats = RunStats()
    stats.errors[("articlequality", "server_error")] = 47
    assert next_steps(report(stats, 30.0)) == [
        "47 answers not asked after a model failed the same way for one wiki again and "
        "again (server_error; the message names the answer): run the same command again to "
        "ask them once the model is fixed"
    ]
    one = RunStats()
    one.errors[("articlequality", "server_error")] = 1
    assert next_steps(report(one, 30.0))[0].startswith("1 answer not asked after")
    assert next_steps(report(one, 30.0))[0].endswith("to ask it once the model is fixed")


def test_a_short_run_is_not_compared_with_an_hourly_rate() -> None:
    stats = RunStats()
    stats.requests_sent = 2
    short = report(stats, 0.011)
    assert "(too short a run to compare with its rate)" in short.render()
    assert short.to_dict()["budget_utilisation"] is None
    stats.requests_sent = 139
    long = report(stats, 20.0)
    assert "budget 50000/3600s (13.89/s, 50.0% used)" in long.render()
    assert long.to_dict()["budget_utilisation"] == 0.5004
    # Sending for 12 of the 20 s: the share over the sending phase beside the run's.
    stats.first_sent, stats.last_sent = 1000.0, 1012.0
    sending = report(stats, 20.0)
    assert (
        "budget 50000/3600s (13.89/s, 50.0% used; 83.4% over the 12 s of sending)"
        in sending.render()
    )
    assert sending.to_dict()["budget_utilisation_sending"] == 0.834
    # Sending for 5 s of a 20-s run (a Spark job's start-up, a cached run): too short.
    stats.last_sent = 1005.0
    assert "(too short a run to compare with its rate)" in report(stats, 20.0).render()


def test_log_json_gives_progress_log_and_summary_lines(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = csv_input(tmp_path, 30)
    with emulator(undeployed=frozenset({"enwiki-goodfaith"})) as (_, base_url):
        code = main(
            ["score", str(inp), "-o", str(tmp_path / "o.parquet"), "--base-url", base_url]
            + ["-m", "enwiki-damaging,enwiki-goodfaith", "--rate", "60/s"]
            + ["--log-json", "--progress-every", "0.05"]
        )
    err = capsys.readouterr().err
    assert code == 0, err
    events = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    kinds = [e["event"] for e in events]
    assert kinds[-2:] == ["summary", "log"]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress, kinds
    assert all(e["rows_total"] == 30 for e in progress)  # a CSV's total, from the estimate
    assert set(progress[-1]) == {
        "event", "elapsed_s", "rows_done", "rows_total", "eta_s", "requests", "window",
        "http_429", "errors", "models",
    }  # fmt: skip
    assert progress[-1]["window"]["budget"] == 60
    assert max(e["window"]["sent"] for e in progress) <= 60
    summary = events[-2]
    assert (summary["rows_written"], summary["scores_per_model"]) == (
        30,
        {"enwiki-damaging": 30, "enwiki-goodfaith": 0},
    )
    assert events[-1] == {
        "event": "log",
        "level": "warning",
        "message": "not deployed on Lift Wing for some or all rows: enwiki-goodfaith; "
        "`lwbatch models` lists the names, and a 404 means the wiki has no such model",
    }
    assert any(e["event"] == "log" and "the whole input" in e["message"] for e in events)


def test_a_log_gets_a_progress_line_with_total_and_eta(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = csv_input(tmp_path, 30)
    with emulator() as (_, base_url):
        code = main(
            ["score", str(inp), "-o", str(tmp_path / "o.parquet"), "--base-url", base_url]
            + ["-m", "enwiki-damaging", "--rate", "60/s", "--progress-every", "0.05"]
        )
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [x for x in err.splitlines() if x.startswith("lwbatch: INFO: progress: ")]
    assert lines
    assert all("/30 rows" in x and "enwiki-damaging " in x and "window " in x for x in lines)
    assert all(x.endswith(", 429s 0, errors 0") for x in lines)
    assert any(", ETA " in x for x in lines)


def test_progress_every_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    from lwbatch.cli import main

    assert main(["score", "x.csv", "-o", "y.parquet", "-m", "enwiki-damaging"]
                + ["--progress-every", "0"]) == 2  # fmt: skip
    assert capsys.readouterr().err == "lwbatch: error: --progress-every must be > 0, got 0.0\n"


def test_with_log_json_errors_are_json_lines_too(capsys: pytest.CaptureFixture[str]) -> None:
    from lwbatch.cli import main

    code = main(["score", "x.csv", "-o", "y.parquet", "-m", "enwiki-damageing", "--log-json"])
    err = capsys.readouterr().err
    assert code == 2
    event = json.loads(err)
    assert (event["event"], event["kind"], event["exit_code"]) == ("error", "error", 2)
    assert event["message"].startswith(
        "unknown model 'enwiki-damageing' (did you mean 'enwiki-damaging'?)"
    )
    assert main(["score", "--log-json", "--no-such-flag"]) == 2
    assert "--no-such-flag" in json.loads(capsys.readouterr().err)["message"]  # click's words
