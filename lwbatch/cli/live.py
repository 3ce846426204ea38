"""What a running `lwbatch score` shows: a progress bar on a terminal, a progress line
every minute in a log (cron, systemd), or JSON lines for schedulers (`--log-json`);
then what to do next.

Each view reads the engine's counters on a timer: rows done, per-model answers, the
requests of the budget's longest window (timed by the limiter's grants), 429s, errors
and an ETA from the row rate so far.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

import anyio
import orjson

from lwbatch.config import Budget
from lwbatch.engine.scorer import Scorer
from lwbatch.engine.stats import RunReport

log = logging.getLogger("lwbatch")
# Seconds between progress lines when stderr is not a terminal, and between JSON lines.
EVERY_NON_TTY = 60.0
EVERY_JSON = 5.0
TTY_REFRESH = 0.5


class LiveView:
    """Progress of one run; `advance` and `on_send` are the engine's callbacks."""

    def __init__(
        self,
        *,
        bar: Any,
        log_json: bool,
        every: float,
        clock: Callable[[], float] = time.monotonic,
        stream: TextIO | None = None,
    ) -> None:
        self.bar = bar  # a tqdm bar, disabled when stderr is not a terminal
        self.log_json = log_json
        self.every = every
        self._clock = clock
        self._stream = stream
        self.total: int | None = None
        self.done = 0
        self._started = clock()
        self._scorer: Scorer | None = None
        self._period = 0.0
        self._requests = 0
        self._sends: deque[float] = deque()
        # Set at the first request (made by attach, on the event loop): what should
        # not compete with the start of the run (the estimate) waits for it.
        self.sending: anyio.Event | None = None

    # -- the engine's callbacks --------------------------------------------------
    def advance(self, rows: int) -> None:
        self.done += rows
        self.bar.update(rows)

    def on_send(self, now: float) -> None:
        sending = self.sending
        if sending is not None and not sending.is_set():
            sending.set()
        if not self._period:
            return
        sends = self._sends
        sends.append(now)
        while sends[0] <= now - self._period:
            sends.popleft()

    def attach(self, scorer: Scorer, total: int | None) -> None:
        self._scorer = scorer
        self.sending = anyio.Event()
        self.set_total(total)
        window = _longest(scorer.budget)
        if window is not None:
            self._period, self._requests = window

    def set_total(self, total: int | None) -> None:
        if total is not None and self.total is None:
            self.total = total
            self.bar.reset(total=total)
            self.bar.update(self.done)

    # -- the view ----------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What the progress line says, as data."""
        scorer = self._scorer
        elapsed = max(self._clock() - self._started, 1e-9)
        stats = scorer.stats if scorer is not None else None
        models: dict[str, dict[str, float]] = {}
        errors = 0
        if stats is not None and scorer is not None:
            for spec in scorer.specs:
                failed = sum(n for (m, _), n in stats.errors.items() if m == spec.name)
                answered = stats.scored[spec.name] + failed
                models[spec.name] = {
                    "answered": answered,
                    "errors": failed,
                    "per_second": round(answered / elapsed, 2),
                }
                errors += failed
        # Rows resumed from an earlier run come at once: the rate is of the others.
        resumed = stats.rows_resumed if stats is not None else 0
        rate = (self.done - resumed) / elapsed
        left = None if self.total is None else max(self.total - self.done, 0)
        return {
            "event": "progress",
            "elapsed_s": round(elapsed, 1),
            "rows_done": self.done,
            "rows_total": self.total,
            "eta_s": None if left is None or rate <= 0 else round(left / rate),
            "requests": stats.requests_sent if stats is not None else 0,
            "window": self._window(),
            "http_429": stats.requests_by_outcome.get("429", 0) if stats is not None else 0,
            "errors": errors,
            "models": models,
        }

    def _window(self) -> dict[str, Any] | None:
        if not self._period:
            return None
        return {
            "period_s": self._period,
            "budget": self._requests,
            "sent": len(self._sends),
            "used": round(len(self._sends) / self._requests, 4),
        }

    def line(self, snap: dict[str, Any]) -> str:
        """The snapshot in words: the bar's postfix, or a log line."""
        parts = [f"{name} {m['per_second']:.1f}/s" for name, m in snap["models"].items()]
        window = snap["window"]
        if window is not None:
            parts.append(
                f"window {100 * window['used']:.0f}% of {window['budget']:,}/"
                f"{_span(window['period_s'])}"
            )
        parts.append(f"429s {snap['http_429']:,}")
        parts.append(f"errors {snap['errors']:,}")
        return ", ".join(parts)

    def tick(self) -> None:
        snap = self.snapshot()
        if self.log_json:
            self._write(orjson.dumps(snap).decode())
            return
        if not self.bar.disable:
            self.bar.set_postfix_str(self.line(snap), refresh=False)
            return
        total = f"/{snap['rows_total']:,}" if snap["rows_total"] is not None else ""
        eta = f", ETA {_span(snap['eta_s'])}" if snap["eta_s"] is not None else ""
        log.info("progress: %s%s rows%s; %s", f"{snap['rows_done']:,}", total, eta, self.line(snap))

    async def run(self) -> None:
        """Tick until cancelled."""
        interval = self.every if (self.log_json or self.bar.disable) else TTY_REFRESH
        while True:
            await anyio.sleep(interval)
            self.tick()

    def finish(self, report: RunReport) -> None:
        """The end of the run: the summary line (JSON), then what to do next."""
        if self.log_json:
            self._write(orjson.dumps({"event": "summary", **report.to_dict()}).decode())
        for advice in next_steps(report):
            log.warning("%s", advice)

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()


def next_steps(report: RunReport) -> list[str]:
    """What the user should do about how the run ended."""
    out = []
    errors = report.errors_by_type
    transient = errors.get("transient_error", 0) + errors.get("rate_limited", 0)
    if transient:
        out.append(
            f"{transient:,} transient failure{'s' * (transient != 1)} (5xx, timeouts, 429s "
            "past the retries): run the same command again to retry "
            + ("them" if transient != 1 else "it")
        )
    faults = errors.get("server_error", 0)
    if faults:
        out.append(
            f"{faults:,} answer{'s' * (faults != 1)} not asked after a model failed the same "
            "way for one wiki again and again (server_error; the message names the answer): "
            "run the same command again to ask "
            + ("them" if faults != 1 else "it")
            + " once the model is fixed"
        )
    undeployed = [
        model for model, kinds in report.errors_per_model.items() if kinds.get("model_not_deployed")
    ]
    if undeployed:
        out.append(
            f"not deployed on Lift Wing for some or all rows: {', '.join(undeployed)}; "
            "`lwbatch models` lists the names, and a 404 means the wiki has no such model"
        )
    too_many = report.requests_by_outcome.get("429", 0)
    if too_many:
        out.append(
            f"{too_many:,} request{'s were' if too_many != 1 else ' was'} answered 429 (over "
            "the gateway's budget, and each counted against it): lower --rate, or check "
            "--tier against your token (`lwbatch token`)"
        )
    return out


def _longest(budget: Budget) -> tuple[float, int] | None:
    windows = [w for w in budget.windows if w.period > 0]
    if not windows:
        return None
    widest = max(windows, key=lambda w: w.period)
    return widest.period, widest.requests


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class JsonLogFormatter(logging.Formatter):
    """Log records as JSON lines, for `--log-json`."""

    def format(self, record: logging.LogRecord) -> str:
        from lwbatch.cli.messages import for_cli

        return orjson.dumps(
            {
                "event": "log",
                "level": record.levelname.lower(),
                "message": for_cli(record.getMessage()),
            }
        ).decode()


__all__ = ["EVERY_JSON", "EVERY_NON_TTY", "JsonLogFormatter", "LiveView", "next_steps"]
