"""`lwbatch bench`: throughput against a budget, on the emulator."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import click
import cloup

from lwbatch.cli.options import (
    BUDGET,
    CONCURRENCY,
    CONTACT,
    NO_SHARED_BUDGET,
    flag,
    positive,
    take,
    token_from,
)
from lwbatch.cli.scoring import write_json
from lwbatch.config import Budget, Endpoint, Tier
from lwbatch.errors import UsageError
from lwbatch.settings import Connection, Pacing

log = logging.getLogger("lwbatch")


@dataclass(frozen=True, slots=True)
class _Bench:
    """One benchmark's settings, read from the flags."""

    budget: Budget
    described: str  # for the chart's title
    seconds: float
    models: list[str]
    latency: str
    endpoint: Endpoint | None  # None: a fresh emulator
    connection: Connection
    pacing: Pacing
    chart: Path | None
    json_path: Path | None

    @property
    def where(self) -> str:
        if self.endpoint is None:
            return f"the emulator (latency {self.latency})"
        return self.endpoint.base_url


@cloup.command()
@cloup.option_group(
    "Run",
    flag("--seconds", type=float, default=60.0, show_default=True, help="How long to run."),
    flag(
        "--model",
        "-m",
        "models",
        multiple=True,
        sets="models",
        said="-m/--model",
        help="Model to score (repeatable). Default: enwiki-damaging, enwiki-goodfaith, "
        "revertrisk-language-agnostic.",
    ),
    flag(
        "--latency",
        default="liftwing",
        show_default=True,
        sets="latency",
        help="The emulator's latency (as for `lwbatch emulate`).",
    ),
    flag(
        "--processes",
        type=int,
        default=1,
        show_default=True,
        help="Run this many benchmark processes at once against one emulator, sharing the "
        "budget as concurrent `lwbatch score` runs do; shows each one's share.",
    ),
)
@BUDGET
@cloup.option_group(
    "Time compression",
    flag(
        "--compress",
        type=float,
        default=360.0,
        show_default=True,
        help="With --tier (default anonymous): shrink the hourly window this many times, "
        "same rate (360: an hour in 10 s).",
    ),
)
@cloup.option_group("Pacing", CONCURRENCY, NO_SHARED_BUDGET)
@cloup.option_group(
    "Connection",
    flag(
        "--endpoint",
        metavar="URL",
        sets="endpoint",
        help="Measure against this endpoint instead of a fresh emulator.",
    ),
    flag(
        "--real-endpoint",
        is_flag=True,
        help="Allow --endpoint to be a real endpoint (sends real requests; needs a --rate "
        "of at most 1/s).",
    ),
    CONTACT,
    flag("--base-url", hidden=True),  # lwbatch 0.1's spelling of --endpoint
)
@cloup.option_group(
    "Figures",
    flag(
        "--chart",
        type=click.Path(path_type=Path),
        default=Path("lwbatch-bench.png"),
        show_default=True,
        help="PNG of requests/second over time against the budget (needs lwbatch[bench]).",
    ),
    flag("--no-chart", is_flag=True, help="Do not draw the chart."),
    flag("--json", "json_path", type=click.Path(path_type=Path), help="Write figures here."),
)
@cloup.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), hidden=True)
@cloup.option("--sent-times", is_flag=True, hidden=True)  # for --processes: each send time
def bench(**given: Any) -> None:
    """Measure throughput against a tier's budget (time-compressed) on the emulator.

    \b
    Example:
      lwbatch bench --tier authenticated --seconds 60
    \b
    Three runs of one identity side by side, sharing its budget:
      lwbatch bench --rate 300/3s --seconds 20 --processes 3
    """
    from lwbatch.cli.bench import DEFAULT_MODELS
    from lwbatch.testing.emulator import Latency

    processes, state_dir, sent_times = take(given, "processes", "state_dir", "sent_times")
    rate, tier, compress = take(given, "rate", "tier", "compress")
    budget, described = _budget(rate, tier or Tier.ANONYMOUS.value, compress)
    endpoint = _endpoint(given, budget, rate)
    seconds, models, latency = take(given, "seconds", "models", "latency")
    if seconds <= 0:
        raise UsageError(f"--seconds must be > 0, got {seconds:g}")
    concurrency, no_shared = take(given, "concurrency", "no_shared_budget")
    run = _Bench(
        budget=budget,
        described=described,
        seconds=seconds,
        models=list(models) or list(DEFAULT_MODELS),
        latency=latency,
        endpoint=endpoint,
        connection=Connection(
            endpoint=endpoint or Endpoint.external(),
            token=token_from(None) if endpoint is not None else None,
            contact=given.pop("contact"),
        ),
        pacing=Pacing(concurrency=positive("--concurrency", concurrency), share=not no_shared),
        chart=_chart(*take(given, "chart", "no_chart")),
        json_path=given.pop("json_path"),
    )
    assert not given, f"flags read by no group: {sorted(given)}"
    Latency.parse(run.latency)
    if (positive("--processes", processes) or 1) > 1 and endpoint is not None:
        raise UsageError("--processes runs against a fresh emulator: leave out --endpoint")
    log.info("bench: budget %s for %g s against %s", budget.describe(), seconds, run.where)
    if processes > 1:
        _bench_processes(run, processes, rate, tier or Tier.ANONYMOUS.value, compress)
        return
    _bench_one(run, state_dir, sent_times)


def _budget(rate: str | None, tier: str, compress: float) -> tuple[Budget, str]:
    from lwbatch.cli.bench import compressed

    budget = Budget.parse(rate) if rate else compressed(Tier(tier), compress)
    if budget.is_unlimited:
        raise UsageError("--rate unlimited: lwbatch bench measures against a budget")
    if rate:
        return budget, f"budget {budget.describe()}"
    return budget, f"{tier} tier, hour compressed {compress:g}x ({budget.describe()})"


def _endpoint(given: dict[str, Any], budget: Budget, rate: str | None) -> Endpoint | None:
    url, old, real = take(given, "endpoint", "base_url", "real_endpoint")
    if url is not None and old is not None:
        raise UsageError("give the endpoint once: --endpoint (or its old spelling --base-url)")
    url = url or old
    if url is None:
        return None
    endpoint = Endpoint(base_url=url)
    if not endpoint.is_loopback:
        if not real:
            raise UsageError(
                f"--endpoint {url} is not a local emulator: add --real-endpoint to send "
                "real requests (with a tiny --rate)"
            )
        if rate is None or budget.rate > 1.0:
            raise UsageError(
                "--real-endpoint needs --rate of at most 1 request per second, e.g. 30/min"
            )
    return endpoint


def _chart(chart: Path, no_chart: bool) -> Path | None:
    from lwbatch.cli.bench import chart_available

    if no_chart:
        return None
    if not chart_available():
        raise UsageError(
            "--chart needs matplotlib: pip install 'lwbatch[bench]' (or add --no-chart)"
        )
    if not chart.parent.is_dir():
        raise UsageError(f"--chart {chart}: no such directory {chart.parent}")
    return chart


def _bench_one(run: _Bench, state_dir: Path | None, sent_times: bool) -> None:
    from lwbatch.cli.bench import draw_chart, run_bench
    from lwbatch.testing.emulator import spawned

    def measure(target: Endpoint, folder: Path | None) -> Any:
        pacing = replace(run.pacing, state_dir=folder) if run.pacing.share else run.pacing
        return anyio.run(
            partial(
                run_bench,
                budget=run.budget,
                seconds=run.seconds,
                models=run.models,
                connection=replace(run.connection, endpoint=target),
                pacing=pacing,
            )
        )

    if run.endpoint is not None:
        result = measure(run.endpoint, state_dir)
    else:
        gateway = str(run.budget.windows[0])
        # A fresh emulator is a new identity: its ledger goes with it.
        with (
            spawned("--latency", run.latency, "--rate", gateway) as url,
            tempfile.TemporaryDirectory(prefix="lwbatch-bench-") as folder,
        ):
            result = measure(Endpoint(base_url=url), Path(folder))
    click.echo(result.render(), err=True)
    if run.chart is not None:
        title = f"lwbatch bench: {run.described}, against {run.where}"
        draw_chart(result, run.chart, title=title)
        click.echo(f"\nchart: {run.chart}", err=True)
    if run.json_path is not None:
        write_json(run.json_path, result.to_dict(sent=sent_times))


def _bench_processes(
    run: _Bench, processes: int, rate: str | None, tier: str, compress: float
) -> None:
    from lwbatch.cli.bench_processes import draw_together, run_processes
    from lwbatch.testing.emulator import spawned

    # What each process is told: the same budget, run and models.
    child = [
        *(["--rate", rate] if rate else ["--tier", tier, "--compress", f"{compress!r}"]),
        *(arg for name in run.models for arg in ("-m", name)),
        *("--seconds", repr(run.seconds)),
        *(["--concurrency", str(run.pacing.concurrency)] if run.pacing.concurrency else []),
        *([] if run.pacing.share else ["--no-shared-budget"]),
        "--no-chart",
        "--sent-times",
    ]
    gateway = str(run.budget.windows[0])
    with (
        spawned("--latency", run.latency, "--rate", gateway) as url,
        tempfile.TemporaryDirectory(prefix="lwbatch-bench-") as folder,
    ):
        args = [*child, "--endpoint", url, "--state-dir", folder]
        together = run_processes(processes, args, run.budget, shared=run.pacing.share)
    click.echo(together.render(), err=True)
    if run.chart is not None:
        how = "one shared budget" if run.pacing.share else "a budget each"
        title = f"lwbatch bench: {processes} processes, {how} ({run.budget.describe()})"
        draw_together(together, run.chart, title=title)
        click.echo(f"\nchart: {run.chart}", err=True)
    if run.json_path is not None:
        write_json(run.json_path, together.to_dict())


__all__ = ["bench"]
