"""The command line's options, in groups by concern, and the settings values each group
builds: every command that needs a value takes its group, so `score`, `plan` and `bench`
read a flag the same way.

Each option is a :class:`Flag` that names the library parameter it sets (`sets`):
lwbatch/cli/messages.py derives from them how a library message's `parameter` reads on
the command line. A group's builder takes the command's values (`given`), removes the
ones it read and returns its value; a command ends with nothing left unread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import click
import cloup

from lwbatch.config import DEFAULT_TIMEOUT, Endpoint, RetryPolicy, Tier, Token
from lwbatch.errors import UsageError
from lwbatch.oauth import DEFAULT_TOKEN_URL, Credentials
from lwbatch.protocol.catalog import Catalog, default_catalog, split_model_names
from lwbatch.settings import INPUT_FORMATS, OUTPUT_FORMATS, Connection, Files, Pacing

F = TypeVar("F", bound=Callable[..., Any])
Given = dict[str, Any]
log = logging.getLogger("lwbatch")


class Flag(cloup.Option):
    """An option that says which library parameters it sets: `sets` (``"rate"``, or
    ``"share=False"`` for a switch), and `said`, how to name the first of them when not
    just by the flag (``"LIFTWING_TOKEN or --token-file"`` for `token`)."""

    def __init__(
        self,
        *args: Any,
        sets: str | Sequence[str] = (),
        said: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.sets = (sets,) if isinstance(sets, str) else tuple(sets)
        self.said = said

    def flag_name(self) -> str:
        if self.said is not None:
            return self.said
        return next(o for o in self.opts if o.startswith("--"))


def flag(*decls: str, sets: str | Sequence[str] = (), said: str | None = None, **kw: Any) -> Any:
    return cloup.option(*decls, cls=Flag, sets=sets, said=said, **kw)


def typed(name: str) -> bool:
    """Whether the flag of parameter `name` was given on the command line (or by its
    environment variable), not by a --config profile or its default."""
    context = click.get_current_context(silent=True)
    if context is None:
        return False
    source = context.get_parameter_source(name)
    return source in (cloup.ParameterSource.COMMANDLINE, cloup.ParameterSource.ENVIRONMENT)


def take(given: Given, *names: str) -> list[Any]:
    """The values of `names`, removed from `given`."""
    return [given.pop(name) for name in names]


def positive(flag_name: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise UsageError(f"{flag_name} must be >= 1, got {value}")
    return value


# -- models and input keys ---------------------------------------------------------------
MODEL = flag(
    "-m",
    "--model",
    "models",
    multiple=True,
    required=True,
    sets="models",
    said="-m/--model",
    help="Model to score with; repeat it or give a comma-separated list (`lwbatch models`).",
)
IGNORE_COVERAGE = flag(
    "--ignore-coverage",
    is_flag=True,
    sets="catalog",
    help="Send rows of wikis outside a model's own list of wikis (`lwbatch models`) "
    "instead of refusing them as unsupported_wiki: for a deployment newer than lwbatch's "
    "copy of the list.",
)
MODELS = cloup.option_group("Models", MODEL, IGNORE_COVERAGE)

INPUT = cloup.option_group(
    "Input",
    flag(
        "--input-format",
        type=click.Choice(list(INPUT_FORMATS)),
        sets="input_format",
        help="Read every INPUT in this format (default: by its name; standard input: "
        "Parquet, JSON lines or CSV, by its first bytes).",
    ),
    flag(
        "--id-column",
        default="rev_id",
        show_default=True,
        sets=("id_column", "id_col"),
        help="Column holding rev_ids.",
    ),
    flag(
        "--wiki-column",
        metavar="NAME",
        sets=("wiki_column", "wiki_col"),
        help="Column of wiki database names (enwiki, zh_yuewiki); rows are then keyed by "
        "(wiki, rev_id). A `lang` column of language codes, or a `wiki_db` column, is "
        "read without this flag.",
    ),
    flag(
        "--lang",
        default="en",
        show_default=True,
        sets="lang",
        help="The Wikipedia (language code: de, zh-yue) of rows that name no wiki.",
    ),
)


def models_of(given: Given) -> tuple[list[str], Catalog]:
    """The model names (each checked, before any input is read) and the catalogue."""
    names, ignore_coverage = take(given, "models", "ignore_coverage")
    models = split_model_names(names)
    catalog = default_catalog().without_coverage() if ignore_coverage else default_catalog()
    catalog.resolve_all(models)
    return models, catalog


class Keys(TypedDict):
    """The input's key columns, as the library's keywords."""

    id_column: str
    wiki_column: str | None
    lang: str


class BudgetKeywords(TypedDict):
    """The budget, as the library's keywords."""

    rate: str | None
    tier: str | None


def keys_of(given: Given) -> Keys:
    id_column, wiki_column, lang = take(given, "id_column", "wiki_column", "lang")
    return Keys(id_column=id_column, wiki_column=wiki_column, lang=lang)


# -- connection --------------------------------------------------------------------------
ENDPOINT = flag(
    "--endpoint",
    metavar="public|internal|internal-staging|URL",
    sets=("endpoint", "base_url"),
    help="Where requests go: the public API gateway (default), Wikimedia's internal "
    "endpoint or its staging one (routed by the Host header), or a URL: a proxy, "
    "`lwbatch emulate`.",
)
HOST_ROUTING = flag(
    "--host-routing",
    is_flag=True,
    help="With --endpoint URL: send Host: MODEL.NAMESPACE.wikimedia.org, as the "
    "internal endpoints route requests (a proxy in front of them, or the emulator).",
)
CONTACT = flag(
    "--contact",
    envvar="LWBATCH_CONTACT",
    sets="contact",
    help="Your e-mail or URL for the User-Agent, as Wikimedia asks (or LWBATCH_CONTACT).",
)
# Spellings of lwbatch 0.1, kept hidden for one release.
_OLD_ENDPOINTS = (
    flag("--base-url", hidden=True),
    flag("--internal", is_flag=True, hidden=True),
    flag("--internal-staging", is_flag=True, hidden=True),
)
CONNECTION = cloup.option_group(
    "Connection",
    ENDPOINT,
    HOST_ROUTING,
    flag(
        "--token-file",
        type=click.Path(path_type=Path),
        sets=("token", "token_file"),
        said="LIFTWING_TOKEN or --token-file",
        help="File holding an OAuth2 bearer token (else LIFTWING_TOKEN; else anonymous).",
    ),
    flag(
        "--credentials",
        type=click.Path(dir_okay=False, path_type=Path),
        sets="credentials",
        help="TOML file of OAuth2 client credentials (client_id, client_secret, optionally "
        "refresh_token, token_url), else LIFTWING_CLIENT_ID and LIFTWING_CLIENT_SECRET: a "
        "token is fetched when none is given, and again when one expires mid-run.",
    ),
    flag("--token-url", sets="token_url", help="OAuth2 token endpoint (default: Meta-Wiki's)."),
    CONTACT,
    flag(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        show_default=True,
        sets="timeout",
        help="Seconds to wait for one answer.",
    ),
    flag(
        "--insecure",
        is_flag=True,
        sets="verify=False",
        help="Do not verify TLS certificates (staging only).",
    ),
    *_OLD_ENDPOINTS,
)


def endpoint_of(given: Given) -> Endpoint:
    """The one endpoint --endpoint names (or an old spelling of it)."""
    chosen, routing, base_url, internal, staging = take(
        given, "endpoint", "host_routing", "base_url", "internal", "internal_staging"
    )
    old = [
        f"--{name}"
        for name, value in (
            ("base-url", base_url),
            ("internal", internal),
            ("internal-staging", staging),
        )
        if value
    ]
    context = click.get_current_context()
    from_profile = context.get_parameter_source("endpoint") is not cloup.ParameterSource.COMMANDLINE
    if old and chosen is not None and not from_profile or len(old) > 1:
        raise UsageError(
            "give the endpoint once: --endpoint (or one of its old spellings --base-url, "
            "--internal, --internal-staging)"
        )
    if old:
        chosen = base_url or ("internal-staging" if staging else "internal")
    if chosen in (None, "public"):
        endpoint = Endpoint.external()
    elif chosen in ("internal", "internal-staging"):
        endpoint = Endpoint.internal(staging=chosen == "internal-staging")
    else:
        if chosen.isalpha():  # a misspelt keyword, not a host
            raise UsageError(
                f"--endpoint {chosen}: give public, internal, internal-staging or a URL "
                "(http://HOST:PORT or https://HOST)"
            )
        return Endpoint(base_url=chosen, host_header=routing)
    if routing:
        raise UsageError(
            "--host-routing is for --endpoint URL (the internal endpoints route by Host already)"
        )
    return endpoint


def connection_of(given: Given, catalog: Catalog | None = None) -> Connection:
    endpoint = endpoint_of(given)
    token_file, credentials, token_url, contact, timeout, insecure = take(
        given, "token_file", "credentials", "token_url", "contact", "timeout", "insecure"
    )
    if insecure:
        log.warning(
            "--insecure: TLS certificates are not verified (the token endpoint's neither); "
            "use it only against staging"
        )
    return Connection(
        endpoint=endpoint,
        token=token_from(token_file),
        credentials=credentials_from(credentials, token_url),
        contact=contact,
        timeout=timeout,
        verify=not insecure,
        catalog=catalog,
    )


def token_from(token_file: Path | None) -> Token | None:
    if token_file is not None:
        return Token.from_file(token_file)
    value = os.environ.get("LIFTWING_TOKEN", "").strip()
    return Token(value) if value else None


def credentials_from(path: Path | None, token_url: str | None) -> Credentials | None:
    if path is not None:
        return Credentials.from_file(path, token_url=token_url)
    client_id = os.environ.get("LIFTWING_CLIENT_ID", "").strip()
    secret = os.environ.get("LIFTWING_CLIENT_SECRET", "").strip()
    if not client_id and not secret:
        if token_url is not None:
            raise UsageError("--token-url needs --credentials (or LIFTWING_CLIENT_ID/SECRET)")
        return None
    if not client_id or not secret:
        given, missing = (
            ("LIFTWING_CLIENT_ID", "LIFTWING_CLIENT_SECRET")
            if client_id
            else ("LIFTWING_CLIENT_SECRET", "LIFTWING_CLIENT_ID")
        )
        raise UsageError(f"{given} is set but {missing} is not: set both, or neither")
    return Credentials(
        client_id=client_id,
        client_secret=secret,
        refresh_token=os.environ.get("LIFTWING_REFRESH_TOKEN", "").strip() or None,
        token_url=token_url or DEFAULT_TOKEN_URL,
    )


# -- budget and pacing -------------------------------------------------------------------
TIER = flag(
    "--tier",
    type=click.Choice([t.value for t in Tier]),
    sets="tier",
    help="The gateway tier whose hourly budget to keep: anonymous 50,000, authenticated "
    "100,000, enterprise 200,000 (default: authenticated with a token, else anonymous; "
    "a token that states its own limit is taken at its word).",
)
RATE = flag(
    "--rate",
    sets=("rate", "budget"),
    help="The budget as N/PERIOD instead of a tier (it overrides --tier): 50000/h, "
    "1000/10s, 20/s; `unlimited` for an endpoint without a gateway (not the public one).",
)
BUDGET = cloup.option_group("Budget", TIER, RATE)
CONCURRENCY = flag(
    "--concurrency",
    type=int,
    sets="concurrency",
    help="Requests in flight, fixed at N (default: adapted to the latency observed, "
    "1.75 x rate x mean latency + 8, at most 1024; 64 with --rate unlimited).",
)
NO_SHARED_BUDGET = flag(
    "--no-shared-budget",
    is_flag=True,
    sets=("share=False", "share_budget=False"),
    help="Keep this run's budget to itself instead of sharing one with every lwbatch run "
    "of the same token (or anonymous endpoint) on this machine. Risky: the gateway "
    "counts their requests together.",
)
STATE_DIR = flag(
    "--state-dir",
    sets="state_dir",
    help="Where shared budgets are kept (default: $LWBATCH_STATE_DIR, else "
    "$XDG_CACHE_HOME/lwbatch, else ~/.cache/lwbatch).",
)
MAX_ATTEMPTS = flag(
    "--max-attempts",
    type=int,
    default=RetryPolicy().max_attempts,
    show_default=True,
    sets="max_attempts",
    help="Requests one (revision, model) may take when the service fails transiently "
    "(5xx, time-outs); each counts in the budget.",
)
PACING = cloup.option_group("Pacing", CONCURRENCY, MAX_ATTEMPTS, NO_SHARED_BUDGET, STATE_DIR)


def budget_of(given: Given) -> BudgetKeywords:
    """`rate` and `tier`, as the library's keywords (it checks them). A --tier given on
    the command line wins over a profile's rate; --rate wins over --tier."""
    tier, rate = take(given, "tier", "rate")
    if tier is not None and rate is not None and typed("tier") and not typed("rate"):
        rate = None
    return BudgetKeywords(rate=rate, tier=tier)


def pacing_of(given: Given, *, unlimited: bool = False) -> Pacing:
    concurrency, attempts, no_shared, state_dir = take(
        given, "concurrency", "max_attempts", "no_shared_budget", "state_dir"
    )
    if no_shared and not typed("state_dir"):
        state_dir = None  # a profile's: where shared budgets live, and none is shared
    pacing = Pacing(
        concurrency=positive("--concurrency", concurrency),
        retry=RetryPolicy(max_attempts=positive("--max-attempts", attempts) or 1),
        share=not no_shared,
        state_dir=state_dir,
        gc_control=True,
    )
    if no_shared and not unlimited:
        log.warning(
            "--no-shared-budget: other lwbatch runs of this identity are not counted; "
            "together they may send more than the gateway allows and get 429s"
        )
    return pacing


# -- output, resume and cache ------------------------------------------------------------
OUTPUT = cloup.option_group(
    "Output",
    flag(
        "-o",
        "--output",
        type=click.Path(),
        sets="output",
        help="File to write: *.parquet (one row per revision), *.jsonl (ORES "
        "score_revisions lines) or *.json (ORES v3 documents); --format for another name.",
    ),
    flag(
        "--format",
        "output_format",
        type=click.Choice(list(OUTPUT_FORMATS)),
        sets="format",
        help="Output format (default: by the output's suffix): long is tidy Parquet, one "
        "row per (revision, model).",
    ),
    flag(
        "--keep-columns",
        metavar="A,B|all",
        sets="keep_columns",
        help="Carry these input columns (or all) to the output beside the key; where a key "
        "repeats, the first row's values.",
    ),
)
CACHE = flag(
    "--cache",
    type=click.Path(dir_okay=False, path_type=Path),
    sets="cache",
    help="Score cache (an SQLite file; score creates it if missing): answers kept there "
    "from earlier runs cost no request, and score adds its answers.",
)
RESUME = cloup.option_group(
    "Resume and cache",
    flag(
        "--restart",
        is_flag=True,
        sets="restart=True",
        help="Discard the progress of an interrupted run (and replace a finished output).",
    ),
    flag(
        "--retry-failed/--no-retry-failed",
        default=True,
        show_default=True,
        sets=("retry_failed=True", "retry_failed=False"),
        help="On resume, ask again what the service failed last time (5xx, time-outs, "
        "server_error).",
    ),
    CACHE,
)


def keep_columns_of(value: str | None) -> list[str] | str | None:
    if value is None:
        return None
    if value.strip() == "all":
        return "all"
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UsageError("--keep-columns: give column names (a,b) or all")
    return names


def files_of(given: Given) -> Files:
    output_format, restart, retry_failed, cache = take(
        given, "output_format", "restart", "retry_failed", "cache"
    )
    return Files(format=output_format, restart=restart, retry_failed=retry_failed, cache=cache)


__all__ = [
    "BUDGET",
    "CACHE",
    "CONCURRENCY",
    "CONNECTION",
    "CONTACT",
    "INPUT",
    "MODEL",
    "MODELS",
    "NO_SHARED_BUDGET",
    "OUTPUT",
    "PACING",
    "RATE",
    "RESUME",
    "TIER",
    "Flag",
    "budget_of",
    "connection_of",
    "files_of",
    "flag",
    "keep_columns_of",
    "keys_of",
    "models_of",
    "pacing_of",
    "take",
]
