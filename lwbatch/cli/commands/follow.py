"""`lwbatch follow`: score new revisions from the event stream into a directory of parts."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import click
import cloup

from lwbatch.cli.options import (
    BUDGET,
    CONNECTION,
    MODELS,
    PACING,
    budget_of,
    connection_of,
    flag,
    models_of,
    pacing_of,
    take,
)
from lwbatch.errors import Interrupted, UsageError, primary_error

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from lwbatch.streaming.session import Following

log = logging.getLogger("lwbatch")

FOLLOWING = cloup.option_group(
    "What to follow",
    flag(
        "--wiki",
        "wiki",
        metavar="DB,DB|all",
        sets="wikis",
        help="Wikis to score (database names: enwiki,dewiki), or all. Default: the wikis "
        "the models name (enwiki for enwiki-damaging).",
    ),
    flag(
        "--namespace",
        "namespace",
        metavar="N,N|all",
        sets="namespaces",
        default="0",
        show_default=True,
        help="Page namespaces to score, or all.",
    ),
    flag("--no-bots", is_flag=True, help="Leave out revisions made by bots."),
    flag(
        "--sample",
        type=float,
        sets="sample",
        metavar="FRACTION",
        help="Score this share of the revisions (by a hash of wiki and rev_id, so every "
        "run takes the same ones); the others get no row and are counted.",
    ),
    flag(
        "--stream",
        type=click.Choice(["revision-create", "recentchange"]),
        default="revision-create",
        show_default=True,
        help="The stream to read.",
    ),
    flag(
        "--stream-url",
        metavar="URL",
        sets="stream_url",
        help="Another stream's full URL (an emulator's).",
    ),
)
WHEN = cloup.option_group(
    "When",
    flag(
        "--since",
        metavar="TIME",
        sets="since",
        help="Start a new output at this time (ISO 8601, UTC milliseconds); a restart goes "
        "on from the output's position instead. Default: now.",
    ),
    flag(
        "--until",
        metavar="TIME|now",
        sets="until",
        help="Stop at the first revision made at TIME or later (now: when the command "
        "started), after writing every one before it: for cron and Airflow runs.",
    ),
    flag(
        "--max-revisions",
        type=int,
        metavar="N",
        sets="max_revisions",
        help="Stop after scoring N revisions.",
    ),
    flag(
        "--accept-gap",
        is_flag=True,
        sets="accept_gap=True",
        help="Go on when the stream no longer holds the events after the output's "
        "position (stopped longer than its retention); default: exit 1.",
    ),
)
WRITING = cloup.option_group(
    "Output",
    flag(
        "-o",
        "--output",
        type=click.Path(path_type=Path),
        help="Directory of Parquet parts (date=YYYY-MM-DD/part-NNNNNN.parquet).",
    ),
    flag(
        "--roll",
        default="60s",
        show_default=True,
        metavar="DURATION",
        help="A new part at least this often (30s, 5m, 1h) while rows come.",
    ),
    flag(
        "--roll-rows",
        type=int,
        default=100_000,
        show_default=True,
        metavar="N",
        help="...or once this many rows wait.",
    ),
    flag(
        "--cache",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Score cache (SQLite): answers go there too, so a later `lwbatch score` of "
        "these revisions is free.",
    ),
    flag("--quiet", "-q", is_flag=True, help="No progress lines; warnings and errors still show."),
    flag(
        "--progress-every",
        type=float,
        default=60.0,
        show_default=True,
        metavar="SECONDS",
        help="Seconds between progress lines.",
    ),
)


@cloup.command()
@MODELS
@FOLLOWING
@WHEN
@WRITING
@CONNECTION
@BUDGET
@PACING
def follow(**given: Any) -> None:
    """Keep a scored dataset current: score each new revision from Wikimedia's event
    stream as it is made, into a directory of Parquet parts.

    Runs until stopped (Ctrl-C, SIGTERM), or until --until / --max-revisions. Rerun the
    same command to go on where it stopped: every revision appears once.

    \b
    Example (an hourly cron job):
      lwbatch follow -m enwiki-damaging --wiki enwiki -o damaging/ \\
          --since 2026-12-01T00:00:00Z --until now
    """
    output, roll, roll_rows, quiet, every = take(
        given, "output", "roll", "roll_rows", "quiet", "progress_every"
    )
    if output is None:
        raise UsageError("give --output, the directory to keep the parts in")
    if roll_rows < 1:
        raise UsageError(f"--roll-rows must be >= 1, got {roll_rows}")
    if not every > 0:
        raise UsageError(f"--progress-every must be > 0 seconds, got {every:g}")
    seconds = _seconds(roll)
    following = _following_of(given)
    from lwbatch.cli.stops import install

    install(fresh=False)
    run_follow(following, Path(output), roll=seconds, roll_rows=roll_rows, quiet=quiet, every=every)


def _following_of(given: dict[str, Any]) -> Following:
    """The follower the flags describe."""
    from lwbatch.settings import Files, RunSettings
    from lwbatch.streaming.core import Filters
    from lwbatch.streaming.session import Following, StreamSource

    wiki, namespace, no_bots, sample, stream, stream_url, cache = take(
        given, "wiki", "namespace", "no_bots", "sample", "stream", "stream_url", "cache"
    )
    since, until, max_revisions, accept_gap = take(
        given, "since", "until", "max_revisions", "accept_gap"
    )
    models, catalog = models_of(given)
    connection = connection_of(given, catalog)
    budget = budget_of(given)
    pacing = pacing_of(given, unlimited=budget["rate"] == "unlimited")
    assert not given, f"flags read by no group: {sorted(given)}"
    filters = Filters(
        wikis=_wikis(wiki, connection.models().resolve_all(models)),
        namespaces=_namespaces(namespace),
        bots=not no_bots,
        sample=sample,
    )
    settings = RunSettings.of(
        models,
        **budget,
        connection=connection,
        pacing=replace(pacing, gc_control=False),
        files=Files(cache=cache, journal=False),
    )
    return Following(
        settings,
        filters=filters,
        source=StreamSource(stream, stream_url),
        since=since,
        until=until,
        max_revisions=max_revisions,
        accept_gap=accept_gap,
    )


def run_follow(
    following: Following,
    output: Path,
    *,
    roll: float,
    roll_rows: int,
    quiet: bool,
    every: float,
) -> None:
    """Follow into the directory `output`, a part every `roll` seconds or `roll_rows`
    rows, until the end the options set, or a signal: then raise Interrupted with its
    exit code, once the last part is written."""
    received: list[int] = []
    view = _View(quiet=quiet, every=every)
    anyio.run(_run, following, output, roll, roll_rows, view, received)
    if received:
        signum = received[0]
        exc = Interrupted(saved_in=None)
        exc.args = (
            f"stopped by {signal.Signals(signum).name}; the output holds every revision up "
            "to its position: rerun the same command to go on",
        )
        exc.exit_code = 128 + signum
        raise exc


async def _run(
    following: Following,
    output: Path,
    roll: float,
    roll_rows: int,
    view: _View,
    received: list[int],
) -> None:
    from lwbatch.streaming.parts import PartWriter
    from lwbatch.threads import on_thread

    specs = following.settings.connection.models().resolve_all(following.models)
    writer = PartWriter(output, specs, following.options)
    try:
        # A stored position wins over --since, as Last-Event-ID does at EventStreams.
        following.resume = await on_thread(writer.restore)
        async with following, anyio.create_task_group() as tg:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                tg.start_soon(_watch, signals, following, received, tg)
                next_part = time.monotonic() + roll
                # Batches of a second at most: their rows become Arrow as they come,
                # and a part is committed every `roll`.
                async for batch in following.batches(seconds=min(roll, 1.0), rows=1_024):
                    await on_thread(partial(writer.add, batch))
                    due = time.monotonic() >= next_part or writer.pending_rows >= roll_rows
                    if due or batch.last:
                        await on_thread(writer.commit)
                        next_part = time.monotonic() + roll
                    view.show(following, writer)
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise primary_error(group) from None
    finally:
        writer.close()
    view.show(following, writer, final=True)


async def _watch(
    signals: AsyncIterator[int], following: Following, received: list[int], tg: TaskGroup
) -> None:
    async for signum in signals:
        if received:
            log.warning("second signal: exiting now; the output holds every part written")
            os._exit(128 + signum)
        received.append(signum)
        log.warning(
            "%s: finishing the revisions in flight, then writing the last part; a second "
            "signal quits at once",
            signal.Signals(signum).name,
        )
        # In a task of its own, so that a second signal is heard meanwhile.
        tg.start_soon(following.stop, 10.0)


class _View:
    """Progress lines: revisions, parts, the lag and whether it grows."""

    def __init__(self, *, quiet: bool, every: float) -> None:
        self.quiet = quiet
        self.every = every
        self.started = time.monotonic()
        self.next_at = self.started + every
        self.rate_said = False
        # (when, lag) of the last progress interval: the trend's base.
        self.lags: deque[tuple[float, float]] = deque()

    def show(self, following: Any, writer: Any, *, final: bool = False) -> None:
        follower = following.follower
        now = time.monotonic()
        lag = follower.lag_seconds
        if lag is not None:
            self.lags.append((now, lag))
        window = min(self.every, 60.0)
        while len(self.lags) > 2 and self.lags[1][0] <= now - window:
            self.lags.popleft()
        if self.quiet:
            return
        if not self.rate_said and now - self.started >= 60.0:
            self.rate_said = True
            self._rate_line(following)
        if not final and now < self.next_at:
            return
        self.next_at = now + self.every
        counts = follower.counts
        trend = ""
        if lag is not None and self.lags and self.lags[0][0] <= now - window:
            # Seconds of lag gained per second: over 5% is a lag that grows.
            then, was = self.lags[0]
            change = (lag - was) / max(now - then, 1e-9)
            trend = (
                " (growing)" if change > 0.05 else " (shrinking)" if change < -0.05 else " (steady)"
            )
        dropped = ", ".join(f"{n:,} {why}" for why, n in counts.dropped.most_common())
        lag_text = f"; lag {lag:,.1f} s{trend}" if lag is not None else ""
        parts = writer.parts_written
        log.info(
            "%s%s revisions scored, %s written in %s part%s%s; %s events read (dropped: %s)",
            "follow done: " if final else "follow: ",
            f"{counts.rows:,}",
            f"{writer.rows_written:,}",
            f"{parts:,}",
            "" if parts == 1 else "s",
            lag_text,
            f"{counts.events:,}",
            dropped or "none",
        )

    def _rate_line(self, following: Following) -> None:
        follower = following.follower
        assert follower is not None
        # Per second of event time, sampled-out revisions too: what the wikis make, not
        # what the budget let through.
        per_second = follower.counts.wanted_per_second
        if per_second is None:
            return
        models = len(follower.scorer.specs)
        share = following.filters.sample or 1.0
        requests = per_second * share * models * 3600
        budget = follower.scorer.budget
        if budget.is_unlimited:
            log.info("the chosen wikis make %s revisions an hour", f"{per_second * 3600:,.0f}")
            return
        hourly = budget.rate * 3600
        if requests <= hourly:
            log.info(
                "the chosen wikis need %s requests an hour (%s revisions x %d models); the "
                "budget is %s an hour: it keeps up",
                f"{requests:,.0f}",
                f"{per_second * share * 3600:,.0f}",
                models,
                f"{hourly:,.0f}",
            )
        else:
            log.warning(
                "the chosen wikis need %s requests an hour, more than the budget's %s: the "
                "lag will grow; --sample %.2f would fit",
                f"{requests:,.0f}",
                f"{hourly:,.0f}",
                max(hourly / requests * share * 0.95, 0.01),
            )


def _seconds(text: str) -> float:
    """A --roll duration: 30s, 5m, 1h (a Rate's periods), or plain seconds."""
    from lwbatch.config import Rate

    value = text.strip().lower()
    try:
        seconds = float(value) if value.replace(".", "", 1).isdigit() else None
        if seconds is None:
            seconds = Rate.parse(f"1/{value}").period
    except (ValueError, UsageError):
        seconds = -1.0
    if not seconds > 0:
        raise UsageError(f"--roll: {text!r} is not a duration (30s, 5m, 1h)")
    return seconds


def _wikis(value: str | None, specs: Any) -> frozenset[str] | None:
    if value is not None:
        if value.strip() == "all":
            return None
        names = frozenset(w.strip() for w in value.split(",") if w.strip())
        if not names:
            raise UsageError("--wiki: give database names (enwiki,dewiki) or all")
        _known(names)
        return names
    named = {s.wiki for s in specs}
    if None in named:
        unnamed = next(s.name for s in specs if s.wiki is None)
        raise UsageError(
            f"--wiki: {unnamed} scores more than one wiki; name the wikis to follow "
            "(--wiki enwiki,dewiki) or --wiki all"
        )
    return frozenset(w for w in named if w is not None)


def _known(names: frozenset[str]) -> None:
    """Refuse names that are no Wikimedia wiki's database name (events say `enwiki`)."""
    import difflib

    from lwbatch.wikis import wikis

    known = wikis().by_dbname
    for name in sorted(names):
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1) or (
                [f"{name}wiki"] if f"{name}wiki" in known else []
            )
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(
                f"--wiki: {name} is no wiki's database name{hint}; events name wikis as "
                "enwiki, dewiki, wikidatawiki"
            )


def _namespaces(value: str) -> frozenset[int] | None:
    if value.strip() == "all":
        return None
    try:
        found = frozenset(int(n) for n in value.split(","))
    except ValueError:
        found = frozenset()
    if not found or any(not 0 <= n < 2**31 for n in found):
        raise UsageError(f"--namespace: {value!r} is not a list of namespace numbers (0,1) or all")
    return found


__all__ = ["follow", "run_follow"]
