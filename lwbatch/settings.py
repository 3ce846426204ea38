"""The settings of a run, as frozen values that check themselves, one concern each.

    Connection  where requests go and as whom: endpoint, token or credentials, contact,
                time-out, TLS, the model catalogue (and a transport, for tests)
    Pacing      how fast and how many at once: a limiter, concurrency, retries, the
                budget shared with other runs, batching linger (and a clock, for tests)
    Files       the files of a run: the input's format, the output's format and kept
                columns, the journal beside it (restart, retry failed), the score cache
    Hooks       what a caller hears: progress, the start of the run, every request sent

Every entry point (the command line, :func:`~lwbatch.score_file`, :func:`~lwbatch.score`,
:func:`~lwbatch.plan_file`, ``lwbatch.spark.score``, the benchmarks) builds these once
and hands them on; the budget (`rate` or `tier`) and the key columns (`id_column`,
`wiki_column`, `lang`) are keywords of their own, as most calls give them.
:class:`RunSettings` holds all of one run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio

from lwbatch.config import DEFAULT_TIMEOUT, Budget, Endpoint, RetryPolicy, Tier, Token
from lwbatch.errors import UsageError

if TYPE_CHECKING:
    import httpx

    from lwbatch.durability.disk import Disk
    from lwbatch.engine.scorer import Scorer
    from lwbatch.keys import RowKey
    from lwbatch.oauth import Credentials
    from lwbatch.protocol.catalog import Catalog
    from lwbatch.results import Score
    from lwbatch.seams import Journal, Limiter, ScoreCache, Source

# Seconds a partial batch may wait for more revisions of its wiki.
DEFAULT_LINGER = 0.05
# Rows read from the input at a time.
DEFAULT_BATCH_ROWS = 65_536
KEEP_ALL = "all"
OUTPUT_FORMATS = ("parquet", "long", "jsonl", "ores-json")
INPUT_FORMATS = ("parquet", "csv", "tsv", "jsonl")


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """Where requests go and as whom.

    `endpoint`: the public gateway by default. `token`, or OAuth2 `credentials` that get
    one (and a new one after a 401). `contact`: your e-mail or URL for the User-Agent,
    as Wikimedia asks. `timeout`: seconds for one answer. `verify`: TLS certificates.
    `catalog`: the models the endpoint serves (the shipped one by default;
    ``default_catalog().without_coverage()`` sends wikis outside a model's own list).
    `transport` replaces the HTTP stack (tests, a proxy of your own).
    """

    endpoint: Endpoint = field(default_factory=Endpoint.external)
    token: Token | None = None
    credentials: Credentials | None = None
    contact: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    verify: bool = True
    catalog: Catalog | None = None
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.endpoint, Endpoint):
            raise UsageError(
                f"`endpoint` must be an Endpoint, e.g. Endpoint(base_url=...), not "
                f"{type(self.endpoint).__name__}"
            )
        if self.token is not None and not isinstance(self.token, Token):
            raise UsageError("`token` must be a Token: Token('...') or Token.from_file(path)")
        if isinstance(self.timeout, bool) or not (
            isinstance(self.timeout, int | float) and math.isfinite(self.timeout)
        ):
            raise UsageError(f"`timeout` must be a number of seconds, got {self.timeout!r}")
        if self.timeout <= 0:
            raise UsageError(f"`timeout` must be > 0 seconds, got {self.timeout:g}")
        if self.contact is not None:
            contact = self.contact.strip()
            if not contact or any(c in contact for c in "\r\n\x00()"):
                raise UsageError(
                    "`contact` must be a single line without parentheses (an e-mail "
                    "address or URL): it goes in the User-Agent"
                )
            object.__setattr__(self, "contact", contact)
        sends_token = self.token is not None or self.credentials is not None
        if sends_token and self.endpoint.is_plain_http and not self.endpoint.is_loopback:
            raise UsageError(
                f"refusing to send the token over plain http to {self.endpoint.base_url}: "
                "it would travel in clear text; use https"
            )

    def models(self) -> Catalog:
        """The catalogue to resolve model names with."""
        from lwbatch.protocol.catalog import default_catalog

        return self.catalog if self.catalog is not None else default_catalog()


@dataclass(frozen=True, slots=True, kw_only=True)
class Pacing:
    """How fast and how many at once (the budget itself is `rate` or `tier`).

    `limiter`: a :class:`~lwbatch.seams.Limiter` of your own instead of the budget's
    (one process' share of a budget several processes split). `concurrency`: requests in
    flight, fixed; None adapts to the latency observed. `retry`: retries of transient
    failures and 429s. `share`: draw from one budget with every lwbatch run of the same
    identity on this machine (kept under `state_dir`), as `score_file`, `lwbatch.score`
    and the command do; a :class:`~lwbatch.Scorer` of your own shares only the ledger
    it is given (``Scorer(..., ledger=SharedLedger.open(...))``). `gc_control`: time Python's
    garbage collections (fewer 429s on tight budgets; switches automatic collection off
    while the run lasts). `linger`: seconds a partial batch waits for more revisions;
    `max_open`: revisions in flight at once (bounds memory). `clock` and `sleep` replace
    time (tests).
    """

    limiter: Limiter | None = None
    concurrency: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    share: bool = True
    state_dir: Path | str | None = None
    gc_control: bool = False
    linger: float = DEFAULT_LINGER
    max_open: int | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, repr=False)

    def __post_init__(self) -> None:
        if self.concurrency is not None and not _count(self.concurrency):
            raise UsageError(f"`concurrency` must be a whole number >= 1, got {self.concurrency!r}")
        if self.max_open is not None and not _count(self.max_open):
            raise UsageError(f"`max_open` must be a whole number >= 1, got {self.max_open!r}")
        if not (isinstance(self.linger, int | float) and 0 <= self.linger < math.inf):
            raise UsageError(f"`linger` must be >= 0 seconds, got {self.linger!r}")
        if not isinstance(self.retry, RetryPolicy):
            raise UsageError("`retry` must be a RetryPolicy")
        if self.state_dir is not None:
            if not self.share:
                raise UsageError(
                    "`state_dir` is where a shared budget is kept, and `share=False` shares "
                    "none: give one or the other"
                )
            if not str(self.state_dir).strip():  # Path("") would be the working directory
                raise UsageError("`state_dir` is empty: give a directory, or leave it out")
            object.__setattr__(self, "state_dir", Path(self.state_dir))
        if self.gc_control and self.limiter is not None:
            from lwbatch.pacing.limiter import BudgetLimiter

            if not isinstance(self.limiter, BudgetLimiter):
                # Collections are timed inside BudgetLimiter.acquire(); another limiter
                # would leave automatic collection off with nothing running it.
                raise UsageError("`gc_control` needs lwbatch's own BudgetLimiter as `limiter`")

    @property
    def shares(self) -> bool:
        """Whether this run may share its budget: not with a limiter of the caller's
        (it carries its own), nor in virtual time (an injected clock)."""
        return self.share and self.limiter is None and self.clock is time.monotonic


@dataclass(frozen=True, slots=True, kw_only=True)
class Files:
    """The files of a run.

    `input_format`: read every input as parquet, csv, tsv or jsonl (default: by name).
    `format`: the output's (parquet, long, jsonl or ores-json; default: by its suffix).
    `keep_columns`: input columns carried to the output (names, or ``"all"``).
    `journal`: keep progress beside the output so that a rerun resumes (or a
    :class:`~lwbatch.seams.Journal` of your own); `restart` discards it and replaces a
    finished output; `retry_failed` asks again, on resume, what the service failed.
    `cache`: a score cache (an SQLite file, created if missing, or a
    :class:`~lwbatch.seams.ScoreCache`): its answers cost no request, and this run's
    final answers are added. `batch_rows`: input rows read at a time. `disk`: the file
    operations the journal's writes go through (tests make them fail).
    """

    input_format: str | None = None
    format: str | None = None
    keep_columns: tuple[str, ...] | str | None = None
    journal: bool | Journal = True
    restart: bool = False
    retry_failed: bool = True
    cache: ScoreCache | Path | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    disk: Disk | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            raise UsageError(
                f"`input_format` {self.input_format!r}: give one of {', '.join(INPUT_FORMATS)}"
            )
        if self.format is not None and self.format not in OUTPUT_FORMATS:
            raise UsageError(f"`format` {self.format!r}: give one of {', '.join(OUTPUT_FORMATS)}")
        object.__setattr__(self, "keep_columns", _kept(self.keep_columns))
        if not isinstance(self.journal, bool) and not hasattr(self.journal, "record_answers"):
            raise UsageError("`journal` must be True, False or a Journal (e.g. FileJournal)")
        if isinstance(self.cache, str):
            object.__setattr__(self, "cache", Path(self.cache))
        if self.cache is not None and not isinstance(self.cache, Path):
            if not hasattr(self.cache, "get"):
                raise UsageError("`cache` must be a path (an SQLite file) or a ScoreCache")
        if not _count(self.batch_rows):
            raise UsageError(f"`batch_rows` must be a whole number >= 1, got {self.batch_rows!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hooks:
    """What a caller hears of a run.

    `progress(n)`: n more input rows are done (scored, resumed or duplicates).
    `on_start(source, scorer)`: the input, output and journal were accepted and no
    request left yet; keep the scorer to ``await scorer.stop(grace)`` from another task.
    `on_send(t)`: a request leaves at clock time `t`. `on_answer(model, [(key, score)])`:
    fresh answers, before their rows count as done (a journal keeps them here).
    """

    progress: Callable[[int], None] | None = None
    on_start: Callable[[Source, Scorer], None] | None = None
    on_send: Callable[[float], None] | None = None
    on_answer: Callable[[str, list[tuple[RowKey, Score]]], None] | None = None

    def __post_init__(self) -> None:
        for name in ("progress", "on_start", "on_send", "on_answer"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise UsageError(f"`{name}` must be a function (or None)")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    """Everything one run takes: the models, the budget, the key columns and the values
    above. Built once by each entry point (:meth:`of` from keywords)."""

    models: tuple[str, ...]
    budget: Budget | None = None
    tier: Tier | None = None
    id_column: str = "rev_id"
    wiki_column: str | None = None
    lang: str = "en"
    connection: Connection = field(default_factory=Connection)
    pacing: Pacing = field(default_factory=Pacing)
    files: Files = field(default_factory=Files)
    hooks: Hooks = field(default_factory=Hooks)

    def __post_init__(self) -> None:
        if not self.models:
            raise UsageError("no model given: name at least one with `models`")
        if not self.id_column or not isinstance(self.id_column, str):
            raise UsageError("`id_column` is empty: name the column that holds the rev_ids")

    @classmethod
    def of(
        cls,
        models: str | Sequence[str],
        *,
        rate: str | Budget | None = None,
        tier: Tier | str | None = None,
        **values: Any,
    ) -> RunSettings:
        """From the keywords of the public functions: `rate` as N/PERIOD text or a
        Budget, `tier` as its name, a model or several; a value (`connection`,
        `pacing`, `files`, `hooks`) given as None is its default."""
        names = (models,) if isinstance(models, str) else tuple(models)
        given = {
            name: value
            for name, value in values.items()
            if value is not None or name not in _VALUES
        }
        return cls(models=names, budget=read_rate(rate), tier=read_tier(tier), **given)


# The settings values the public functions take as None for "the default".
_VALUES = frozenset({"connection", "pacing", "files", "hooks"})


def read_rate(rate: str | Budget | None) -> Budget | None:
    """`rate` as the public functions take it: N/PERIOD, ``unlimited`` or a Budget."""
    if rate is None or isinstance(rate, Budget):
        return rate
    if isinstance(rate, str):
        return Budget.parse(rate)
    raise UsageError(f"`rate` must be N/PERIOD text (e.g. 1000/h) or a Budget, not {rate!r}")


def read_tier(tier: Tier | str | None) -> Tier | None:
    if tier is None or isinstance(tier, Tier):
        return tier
    try:
        return Tier(tier)
    except ValueError:
        raise UsageError(
            f"`tier` {tier!r}: give one of {', '.join(t.value for t in Tier)}"
        ) from None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _kept(value: object) -> tuple[str, ...] | Literal["all"] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            raise UsageError("`keep_columns` is empty: give column names, or 'all'")
        return "all" if value.strip() == KEEP_ALL else (value,)
    if isinstance(value, Sequence) and all(isinstance(v, str) and v for v in value):
        if not value:
            raise UsageError("`keep_columns` is empty: give column names, or 'all'")
        return tuple(value)
    raise UsageError("`keep_columns` must be column names (a list of strings) or 'all'")


__all__ = [
    "DEFAULT_BATCH_ROWS",
    "DEFAULT_LINGER",
    "KEEP_ALL",
    "Connection",
    "Files",
    "Hooks",
    "Pacing",
    "RunSettings",
    "read_rate",
    "read_tier",
]
