"""The CLI's scoring run: signals, a progress bar and GC control around the library
call, then the summary. Only this layer changes the process (signals, GC, exits)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import click
import orjson

from lwbatch.cache import SqliteScoreCache
from lwbatch.cli import stops
from lwbatch.cli.live import EVERY_JSON, EVERY_NON_TTY, LiveView
from lwbatch.cli.messages import for_cli
from lwbatch.config import Token
from lwbatch.durability.atomic import write_atomic
from lwbatch.engine.scorer import Scorer
from lwbatch.engine.stats import RunReport
from lwbatch.errors import Interrupted, OutputError, UsageError, primary_error
from lwbatch.io.inputs import ManySource
from lwbatch.io.sources import FileSource
from lwbatch.job import Job
from lwbatch.plan import Plan, Planner
from lwbatch.seams import ScoreCache, Source
from lwbatch.settings import Hooks, RunSettings
from lwbatch.tokens import TokenClaims

log = logging.getLogger("lwbatch")
DEFAULT_GRACE = 10.0


NO_CONTACT = (
    "no --contact given: Wikimedia asks API clients to name a contact "
    "in the User-Agent; set --contact or LWBATCH_CONTACT"
)


@dataclass(frozen=True, slots=True)
class Reporting:
    """What the command line shows of a run and where it writes its summary."""

    report_path: Path | None = None
    quiet: bool = False
    log_json: bool = False
    progress_every: float | None = None
    grace: float = DEFAULT_GRACE

    def applied(self) -> Reporting:
        """Set the process' logging for it (the CLI's to change), and check the report's
        folder before any work."""
        if self.quiet:
            logging.getLogger("lwbatch").setLevel(logging.WARNING)
        if self.log_json:
            from lwbatch.cli.live import JsonLogFormatter

            for handler in logging.getLogger().handlers:
                handler.setFormatter(JsonLogFormatter())
        path = self.report_path
        if path is not None and not path.parent.is_dir():
            raise UsageError(f"--report {path}: its directory does not exist")
        return self

    def show(self, report: RunReport) -> None:
        if not self.quiet and not self.log_json:
            click.echo(for_cli(report.render()), err=True)

    def save(self, report: RunReport) -> None:
        if self.report_path is not None:
            write_json(self.report_path, report.to_dict())


def score_and_report(
    input_path: Path | Source,
    output: Path,
    settings: RunSettings,
    reporting: Reporting,
    *,
    warn_no_contact: bool = False,
) -> None:
    """Run a :class:`~lwbatch.job.Job` with the CLI's process-wide settings.

    SIGINT/SIGTERM: stop taking work, let requests in flight finish for up to `grace`
    seconds, save progress and exit 130/143. A second signal exits at once (every
    answer is already in the journal).
    """
    from tqdm import tqdm

    freeze_heap()
    bar = tqdm(
        unit="rev",
        desc="scoring",
        disable=reporting.quiet or reporting.log_json or not draws_a_bar(sys.stderr),
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    every = reporting.progress_every or (EVERY_JSON if reporting.log_json else EVERY_NON_TTY)
    view = LiveView(bar=bar, log_json=reporting.log_json, every=every)
    received: list[int] = []
    grace = reporting.grace
    try:
        report = anyio.run(
            _run, input_path, output, settings, view, warn_no_contact, grace, received
        )
    except Interrupted as exc:
        signum = received[0] if received else stops.last()
        exc.exit_code = 128 + signum
        where = f"progress is saved in {exc.saved_in}" if exc.saved_in else "nothing was saved"
        raise Interrupted.with_message(
            f"stopped by {signal.Signals(signum).name}; {where}: rerun the same command to resume",
            exc,
        ) from None
    finally:
        bar.close()
    reporting.show(report)
    view.finish(report)
    reporting.save(report)


async def _estimate_beside(
    view: LiveView, estimate: Callable[[threading.Event], Plan | None]
) -> None:
    # Reading the input holds the GIL for most of its time: it starts once the run has
    # sent its first request, so that the first request never waits for it (or after
    # a second: a run that resumes or reads a cache may send nothing for a while).
    if view.sending is not None:
        with anyio.move_on_after(1.0):
            await view.sending.wait()
    stop = threading.Event()
    try:
        planned = await anyio.to_thread.run_sync(estimate, stop, abandon_on_cancel=True)
    finally:
        stop.set()  # a run that ends first stops the reading at its next batch
    if planned is not None:
        view.set_total(planned.rows)  # CSV and JSON lines: known only now
    # Progress lines start once the total is known, so every one of them has it (the
    # bar advances from the start either way).
    await view.run()


def _as_at_start(cache: ScoreCache | None) -> ScoreCache | None:
    """The cache the estimate reads: as it was when the run started. The estimate runs
    beside the run, whose own answers must not count as "cached". A cache of another
    kind cannot say when an answer came: the estimate then counts none as cached."""
    if isinstance(cache, SqliteScoreCache):
        return cache.as_of(time.time())
    return None


def _estimate(
    source: Source,
    scorer: Scorer,
    cache: ScoreCache | None,
    token: Token | None,
    refreshed: bool,
    stop: threading.Event,
) -> Plan | None:
    """Log what the whole input costs (the line `lwbatch plan` ends with), and warn when
    the token expires before the run would end (unless credentials will replace it)."""
    if not isinstance(source, FileSource | ManySource):
        return None  # another Source may not be readable twice
    planner = Planner(scorer.specs, scorer.default_wiki.lang, scorer.budget_choice, cache=cache)
    batches = source.batches()
    try:
        for items in batches:
            if stop.is_set():
                return None
            planner.add(items)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    planned = planner.finish()
    if not planned.distinct:
        return planned  # the run stops at once and says why
    if stop.is_set():
        return None  # the run ended first: no estimate after its summary
    log.info("the whole input: %s", planned.estimate())
    _warn_expiry(scorer, planned, token, refreshed)
    return planned


def _warn_expiry(scorer: Scorer, planned: Plan, token: Token | None, refreshed: bool) -> None:
    claims = TokenClaims.of(token) if token is not None and not refreshed else None
    if claims is None or claims.expires is None:
        return
    now = datetime.now(UTC)
    end = now + timedelta(hours=planned.hours(scorer.budget))
    if claims.expires <= now:
        log.warning(
            "the token expired at %s UTC: the gateway will refuse it; put a fresh token "
            "in LIFTWING_TOKEN or --token-file",
            f"{claims.expires:%Y-%m-%d %H:%M}",
        )
    elif claims.expires < end:
        log.warning(
            "the token expires at %s UTC, before this run would end (about %s UTC): "
            "put a fresh token in LIFTWING_TOKEN or --token-file then, and rerun to resume",
            f"{claims.expires:%Y-%m-%d %H:%M}",
            f"{end:%Y-%m-%d %H:%M}",
        )


async def _run(
    input_path: Path | Source,
    output: Path,
    settings: RunSettings,
    view: LiveView,
    warn_no_contact: bool,
    grace: float,
    received: list[int],
) -> Any:
    watcher = _SignalWatcher(grace, received)
    try:
        async with anyio.create_task_group() as tg, AsyncExitStack() as stack:

            def started(source: Source, scorer: Scorer) -> None:
                # Warn only once everything was accepted, so a usage error stays one line.
                if warn_no_contact:
                    log.warning(NO_CONTACT)
                view.attach(scorer, source.total_rows)
                connection = settings.connection
                # The estimate reads the whole input (seconds per million rows): on a
                # thread, beside the run, so the first request does not wait for it.
                tg.start_soon(
                    _estimate_beside,
                    view,
                    partial(
                        _estimate,
                        source,
                        scorer,
                        _as_at_start(scorer.cache),
                        connection.token,
                        connection.credentials is not None,
                    ),
                )
                # Until now Ctrl-C interrupts at once (nothing to save); from here on,
                # it stops the run gracefully. asyncio puts back the default handlers
                # when the receiver closes: ours again after it (LIFO).
                stack.callback(stops.install, fresh=False)
                signals = stack.enter_context(
                    anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
                )
                tg.start_soon(watcher.watch, signals, scorer)

            hooks = Hooks(progress=view.advance, on_send=view.on_send, on_start=started)
            job = Job(input_path, output, replace(settings, hooks=hooks))
            report = await job.run()
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise primary_error(group) from None
    return report


class _SignalWatcher:
    """First SIGINT/SIGTERM: stop the run gracefully. Second: leave at once."""

    def __init__(self, grace: float, received: list[int]) -> None:
        self.grace = grace
        self.received = received

    async def watch(self, signals: AsyncIterator[int], scorer: Scorer) -> None:
        async with anyio.create_task_group() as stopping:
            async for signum in signals:
                if self.received:
                    # Every answer is already in the journal (appended, then fsynced), and
                    # segments appear by rename: leaving now cannot corrupt anything.
                    log.warning("second signal: exiting now; rerun the same command to resume")
                    os._exit(128 + signum)
                self.received.append(signum)
                log.warning(
                    "%s: finishing %d requests in flight (up to %gs), then saving progress; "
                    "a second %s (or Ctrl-C) quits at once",
                    signal.Signals(signum).name,
                    scorer.in_flight,
                    self.grace,
                    signal.Signals(signum).name,
                )
                stopping.start_soon(scorer.stop, self.grace)


def write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    except OSError as exc:
        raise OutputError(f"cannot write the report ({exc.strerror})", path=path) from None


def draws_a_bar(stream: Any) -> bool:
    """Whether `stream` is a terminal a bar can be drawn on; else progress lines are
    logged. A terminal that reports no size (0x0: some CI runners, serial consoles)
    would get a bar of no width."""
    try:
        return bool(stream.isatty()) and os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return False


def freeze_heap() -> None:
    # A full collection walks every object pyarrow, aiohttp and friends allocated at
    # import: measured here, a 40-90 ms pause every ~9 s, which delays requests enough
    # for a server's sliding window to count N+1. Frozen objects are never scanned.
    gc.collect()
    gc.freeze()
