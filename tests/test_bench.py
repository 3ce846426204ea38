"""`lwbatch bench`: compressed tier budgets, refusals before any request, chart and figures."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from lwbatch.cli import main
from lwbatch.cli.bench import compressed
from lwbatch.config import Rate, Tier
from lwbatch.errors import UsageError


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["bench", *args])
    return code, capsys.readouterr().err


def test_compression_shrinks_the_hourly_window_and_keeps_the_rate() -> None:
    budget = compressed(Tier.ANONYMOUS, 360)
    assert budget.windows == (Rate(138, 138 * 3600 / 50_000), Rate(15, 1.0))
    assert budget.rate == pytest.approx(50_000 / 3600)
    assert compressed(Tier.ENTERPRISE, 1).windows[0] == Rate(200_000, 3600.0)
    with pytest.raises(UsageError, match="--compress must be >= 1, got 0.5"):
        compressed(Tier.ANONYMOUS, 0.5)
    with pytest.raises(UsageError, match="less than one request per window"):
        compressed(Tier.ANONYMOUS, 100_000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--endpoint", "https://lift.invalid", "--rate", "30/min"],
            "--endpoint https://lift.invalid is not a local emulator: add --real-endpoint "
            "to send real requests (with a tiny --rate)",
        ),
        (
            ["--endpoint", "https://lift.invalid", "--real-endpoint"],
            "--real-endpoint needs --rate of at most 1 request per second, e.g. 30/min",
        ),
        (
            ["--endpoint", "https://lift.invalid", "--real-endpoint", "--rate", "5/s"],
            "--real-endpoint needs --rate of at most 1 request per second, e.g. 30/min",
        ),
        (["--rate", "unlimited"], "--rate unlimited: lwbatch bench measures against a budget"),
        (["--seconds", "0"], "--seconds must be > 0, got 0"),
        (["--concurrency", "0"], "--concurrency must be >= 1, got 0"),
        (["--chart", "/no/such/dir/c.png"], "--chart /no/such/dir/c.png: no such directory"),
        (["--latency", "soon"], "--latency 'soon'"),
        (["--processes", "0"], "--processes must be >= 1, got 0"),
        (
            ["--processes", "2", "--endpoint", "http://127.0.0.1:9"],
            "--processes runs against a fresh emulator: leave out --endpoint",
        ),
    ],
    ids=["real-host", "real-no-rate", "real-rate-too-high", "unlimited", "seconds", "conc",
         "chart-dir", "latency", "processes", "processes-url"],
)  # fmt: skip
def test_bad_bench_options_fail_before_any_request(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, err = run(capsys, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"lwbatch: error: {message}")


def test_bench_holds_the_budget_and_draws_the_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chart, figures = tmp_path / "bench.png", tmp_path / "bench.json"
    code, err = run(
        capsys,
        "--rate", "40/s", "--seconds", "2", "--latency", "0.01",
        "-m", "enwiki-damaging", "--chart", str(chart), "--json", str(figures),
    )  # fmt: skip
    assert code == 0, err
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = orjson.loads(figures.read_bytes())
    assert data["budget"] == "40/1s"
    # The client sends at most 40 in any second; where they arrive, loopback jitter on
    # a loaded machine can put a 41st into the emulator's second, as the shared-budget
    # tests allow too.
    assert data["rejected_429"] <= 1
    assert max(data["per_second"]) <= 40
    # More than one second's budget went out, so the cap above was tested, and never
    # more than two seconds' worth. (How close to 80 it gets is the machine's
    # business: a floor on throughput would fail on a busy machine, not on a bug.)
    assert 40 < data["requests"] <= 80
    assert data["requests"] == sum(data["per_second"])
    rejected = data["rejected_429"]
    assert f"requests sent       {data['requests']:>10,}   rejected with 429: {rejected}" in err
    assert f"chart: {chart}" in err


def test_bench_processes_share_one_budget_and_show_each_ones_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = tmp_path / "together.json"
    code, err = run(
        capsys,
        "--rate", "200/1s", "--seconds", "3", "--latency", "0.01", "-m", "enwiki-damaging",
        "--processes", "2", "--no-chart", "--json", str(figures),
    )  # fmt: skip
    assert code == 0, err
    data = orjson.loads(figures.read_bytes())
    assert (data["processes"], data["shared"], data["budget"]) == (2, True, "200/1s")
    assert data["rejected_429"] <= 1
    ((window,),) = [data["busiest_windows"]]
    assert window["window"] == "200/1s" and window["most"] <= 200 == window["allowed"]
    # More than a window's worth went out together, so the shared cap was what held
    # them (how close to the budget they got is the machine's business, as above).
    assert data["requests"] > 200
    assert [0.35 <= p["share"] <= 0.65 for p in data["per_process"]] == [True, True]
    assert sum(p["requests"] for p in data["per_process"]) == data["requests"]
    assert "processes                    2   sharing one budget" in err
