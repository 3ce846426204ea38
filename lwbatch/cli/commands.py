"""The `lwbatch` command: argv -> one library call -> exit code.

Exit codes: 0 the run completed (per-revision errors are data), 1 the run was aborted
(authentication, no model deployed, output not writable), 2 usage or input error,
130/143 interrupted by SIGINT/SIGTERM (progress saved).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from lwbatch._version import __version__
from lwbatch.cli.messages import for_cli
from lwbatch.cli.scoring import DEFAULT_GRACE, freeze_heap, score_and_report, write_json
from lwbatch.config import (
    DEFAULT_TIMEOUT,
    Budget,
    Endpoint,
    Rate,
    Tier,
    Token,
)
from lwbatch.errors import LWBatchError, UnknownModelError, UsageError
from lwbatch.oauth import DEFAULT_TOKEN_URL, Credentials
from lwbatch.protocol.catalog import Catalog, Family, ModelSpec, default_catalog, split_model_names
from lwbatch.protocol.coverage import Coverage
from lwbatch.seams import Source
from lwbatch.settings import Connection, Files, Pacing, RunSettings

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("lwbatch")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lwbatch")
def cli() -> None:
    """Bulk-score Wikipedia revisions with Lift Wing models, inside your request budget."""


def _input_options(func: F) -> F:
    """Options of the commands that read an input: the models, and how rows are keyed."""
    for option in reversed(
        [
            click.option(
                "-m",
                "--model",
                "models",
                multiple=True,
                required=True,
                help="Model to score with; repeat it or give a comma-separated list.",
            ),
            click.option(
                "--id-column", default="rev_id", show_default=True, help="Column holding rev_ids."
            ),
            click.option(
                "--lang",
                default="en",
                show_default=True,
                help="The Wikipedia (language code, e.g. de, zh-yue) of rows that name no wiki.",
            ),
            click.option(
                "--input-format",
                type=click.Choice(["parquet", "csv", "tsv", "jsonl"]),
                help="Read every INPUT in this format (default: by its name; standard "
                "input: Parquet, JSON lines or CSV, by its first bytes).",
            ),
            click.option(
                "--wiki-column",
                metavar="NAME",
                help="Column of wiki database names (enwiki, zh_yuewiki) as in the data lake; "
                "rows are then keyed by (wiki, rev_id). A `lang` column of language codes is "
                "read without this flag.",
            ),
            click.option(
                "--ignore-coverage",
                is_flag=True,
                help="Send rows of wikis outside a model's own list of wikis (`lwbatch "
                "models`) instead of refusing them as unsupported_wiki: for a deployment "
                "newer than lwbatch's copy of the list.",
            ),
        ]
    ):
        func = option(func)
    return func


def _run_options(func: F) -> F:
    """Options every command that scores shares."""
    for option in reversed(
        [
            click.option(
                "--concurrency",
                type=int,
                default=None,
                help="Fix the requests in flight at N. Default: adapt to the latency "
                "observed (Little's law: 1.75 x rate x mean latency, at most 1024).",
            ),
            click.option(
                "--timeout",
                type=float,
                default=DEFAULT_TIMEOUT,
                show_default=True,
                help="Seconds to wait for one answer.",
            ),
            click.option(
                "--report",
                "report_path",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Also write the run summary as JSON to this file.",
            ),
            click.option(
                "--quiet",
                "-q",
                is_flag=True,
                help="No progress bar, summary or info lines; warnings and errors still show.",
            ),
        ]
    ):
        func = option(func)
    return func


@cli.command()
@click.argument("input_paths", metavar="[INPUT]...", nargs=-1)
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="File to write: *.parquet (one row per revision), *.jsonl (ORES score_revisions "
    "lines) or *.json (ORES v3 documents); --format for another name.",
)
@click.option(
    "--log-json",
    is_flag=True,
    help="For schedulers: progress, log lines and the final summary as JSON lines on stderr.",
)
@click.option(
    "--progress-every",
    type=float,
    metavar="SECONDS",
    help="Seconds between progress lines when stderr is not a terminal (default 60; "
    "5 with --log-json).",
)
@click.option(
    "--keep-columns",
    metavar="A,B|all",
    help="Carry these input columns (or all) to the output beside the key; where a key "
    "repeats, the first row's values.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["parquet", "long", "jsonl", "ores-json"]),
    help="Output format (default: by the output's suffix): long is tidy Parquet, one row "
    "per (revision, model).",
)
@_input_options
@click.option(
    "--contact",
    envvar="LWBATCH_CONTACT",
    help="Your e-mail or URL for the User-Agent (or LWBATCH_CONTACT).",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help="File holding an OAuth2 bearer token (else LIFTWING_TOKEN; else anonymous).",
)
@click.option(
    "--credentials",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file of OAuth2 client credentials (client_id, client_secret, optionally "
    "refresh_token, token_url), else LIFTWING_CLIENT_ID and LIFTWING_CLIENT_SECRET: a "
    "token is fetched when none is given, and again when one expires mid-run.",
)
@click.option(
    "--token-url",
    help="OAuth2 token endpoint for --credentials (default: Meta-Wiki's).",
)
@click.option(
    "--tier",
    type=click.Choice([t.value for t in Tier]),
    help="Gateway tier, which sets the hourly budget "
    "(default: anonymous; authenticated with a token).",
)
@click.option(
    "--rate",
    help="Budget as N/PERIOD, e.g. 50000/h, 1000/10s, 20/s (overrides --tier); "
    "`unlimited` for endpoints without a gateway (not the public one).",
)
@click.option(
    "--internal", is_flag=True, help="Use the internal endpoint (inference.discovery.wmnet)."
)
@click.option(
    "--internal-staging",
    is_flag=True,
    help="Use the internal staging endpoint (inference-staging.svc.codfw.wmnet), routed "
    "by the Host header as --internal is.",
)
@click.option("--base-url", help="Another endpoint: a proxy, staging, or `lwbatch emulate`.")
@click.option(
    "--host-routing",
    is_flag=True,
    help="With --base-url: send each request with Host: MODEL.NAMESPACE.wikimedia.org, "
    "as the internal endpoints route them (a proxy in front of them, or the emulator).",
)
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates (staging only).")
@click.option(
    "--no-shared-budget",
    is_flag=True,
    help="Keep this run's budget to itself instead of sharing one with every lwbatch run "
    "of the same token (or anonymous endpoint) on this machine. Risky: the gateway "
    "counts their requests together.",
)
@click.option(
    "--state-dir",
    help="Where shared budgets are kept (default: $LWBATCH_STATE_DIR, else "
    "$XDG_CACHE_HOME/lwbatch, else ~/.cache/lwbatch).",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Discard the progress of an interrupted run (and replace a finished output).",
)
@click.option(
    "--retry-failed/--no-retry-failed",
    default=True,
    show_default=True,
    help="On resume, ask again what the service failed last time (5xx, time-outs, server_error).",
)
@click.option(
    "--cache",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Score cache (an SQLite file, created if missing): answers kept there from "
    "earlier runs cost no request, and this run's answers are added.",
)
@click.option(
    "--grace",
    type=float,
    default=DEFAULT_GRACE,
    show_default=True,
    help="On Ctrl-C/SIGTERM, seconds to wait for requests in flight before saving and exiting.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="Where to score: this process, or a Spark job (INPUT a Parquet file or "
    "directory, OUTPUT a Parquet directory; pip install 'lwbatch[spark]').",
)
@click.option("--master", help="With --engine spark: the Spark master (local[4], yarn).")
@click.option("--input-table", help="With --engine spark: read this table instead of INPUT.")
@click.option("--output-table", help="With --engine spark: write this table instead of --output.")
@click.option(
    "--slots",
    type=int,
    help="With --engine spark: task slots that run at once, which share the budget "
    "(default: Spark's default parallelism).",
)
@_run_options
def score(
    input_paths: tuple[str, ...],
    output: str | None,
    log_json: bool,
    progress_every: float | None,
    keep_columns: str | None,
    output_format: str | None,
    models: tuple[str, ...],
    id_column: str,
    lang: str,
    input_format: str | None,
    wiki_column: str | None,
    ignore_coverage: bool,
    contact: str | None,
    token_file: Path | None,
    credentials: Path | None,
    token_url: str | None,
    tier: str | None,
    rate: str | None,
    internal: bool,
    internal_staging: bool,
    base_url: str | None,
    host_routing: bool,
    insecure: bool,
    no_shared_budget: bool,
    state_dir: str | None,
    restart: bool,
    retry_failed: bool,
    cache: Path | None,
    grace: float,
    engine: str,
    master: str | None,
    input_table: str | None,
    output_table: str | None,
    slots: int | None,
    concurrency: int | None,
    timeout: float,
    report_path: Path | None,
    quiet: bool,
) -> None:
    """Score the rev_ids of INPUT with every model into one output file.

    INPUT: Parquet, CSV/TSV or JSON-lines files (optionally .gz), a directory of Parquet
    files, a glob ('data/*.parquet'), several of these, or - for standard input; all
    are read as one input.

    \b
    Example:
      export LIFTWING_TOKEN=...      # optional; anonymous without it
      lwbatch score revisions.parquet -o scores.parquet \\
          -m enwiki-damaging -m enwiki-goodfaith -m revertrisk-language-agnostic \\
          --contact me@example.org
    \b
    A data-lake table, each row scored by its own wiki's model:
      lwbatch score revisions.parquet -o scores.parquet --wiki-column wiki_db \\
          --id-column revision_id -m '{wiki}-damaging' -m revertrisk-language-agnostic
    \b
    In place of ORES' score_revisions (JSON lines in and out):
      cat revs.jsonl | lwbatch score - -o scores.jsonl -m enwiki-damaging
    """
    if quiet:
        logging.getLogger("lwbatch").setLevel(logging.WARNING)
    if log_json:
        from lwbatch.cli.live import JsonLogFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLogFormatter())
    if progress_every is not None and not progress_every > 0:
        raise UsageError(f"--progress-every must be > 0, got {progress_every}")
    if sum(map(bool, (internal, internal_staging, base_url))) > 1:
        raise UsageError(
            "--internal, --internal-staging and --base-url exclude each other; give one"
        )
    if host_routing and not base_url:
        raise UsageError(
            "--host-routing is for --base-url (--internal and --internal-staging route by "
            "Host already)"
        )
    endpoint = (
        Endpoint.internal(staging=internal_staging)
        if internal or internal_staging
        else Endpoint(base_url=base_url, host_header=host_routing)
        if base_url
        else Endpoint.external()
    )
    token = _token(token_file)
    oauth = _credentials(credentials, token_url)
    if insecure:
        log.warning(
            "--insecure: TLS certificates are not verified (the token endpoint's neither); "
            "use it only against staging"
        )
    # What both engines take from the command line.
    common: dict[str, Any] = {
        "models": split_model_names(models),
        "id_column": id_column,
        "lang": lang,
        "wiki_column": wiki_column,
        "endpoint": endpoint,
        "token": token,
        "contact": contact,
        "tier": Tier(tier) if tier else None,
        "budget": _budget(rate, endpoint),
        "concurrency": None if concurrency is None else _positive("--concurrency", concurrency),
        "timeout": timeout,
        "restart": restart,
        "report_path": report_path,
        "quiet": quiet,
        "verify": not insecure,
        "warn_no_contact": endpoint.is_external_gateway and not contact,
        "catalog": _catalog(ignore_coverage),
    }
    if engine == "spark":
        from lwbatch.cli.spark_run import score_on_spark

        context = click.get_current_context()
        if oauth is not None:
            raise UsageError(
                "--credentials is for the local engine: give the Spark job a token "
                "(LIFTWING_TOKEN or --token-file) that lasts the job"
            )
        if cache is not None:
            raise UsageError(
                "--cache is for the local engine: its SQLite file is not shared by "
                "executors on other machines"
            )
        for name, flag in (
            ("grace", "--grace"),
            ("retry_failed", "--retry-failed/--no-retry-failed"),
        ):
            if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
                raise UsageError(
                    f"{flag} is for the local engine: a Spark job keeps no journal "
                    "to resume from, and Spark itself stops its tasks"
                )
        if (not input_paths) == (input_table is None):
            raise UsageError("give INPUT or --input-table (one of them)")
        if len(input_paths) > 1 or "-" in input_paths or input_format is not None:
            raise UsageError(
                "--engine spark reads one INPUT (a Parquet file or directory, or a URI), "
                "or --input-table"
            )
        if (output is None) == (output_table is None):
            raise UsageError("give --output or --output-table (one of them)")
        if keep_columns is not None or log_json or progress_every is not None:
            raise UsageError(
                "--keep-columns, --log-json and --progress-every are for the local engine"
            )
        if no_shared_budget or state_dir is not None:
            raise UsageError(
                "--no-shared-budget and --state-dir are for the local engine: a Spark job "
                "splits its budget between its task slots and shares it with no other run"
            )
        if output_format not in (None, "parquet"):
            raise UsageError(
                f"--format {output_format} is for the local engine: a Spark job writes Parquet"
            )
        score_on_spark(
            input_paths[0] if input_paths else None,
            output,
            input_table=input_table,
            output_table=output_table,
            master=master,
            slots=None if slots is None else _positive("--slots", slots),
            **common,
        )
        return
    if master or slots is not None or input_table or output_table:
        raise UsageError(
            "--master, --slots, --input-table and --output-table are for --engine spark"
        )
    if not input_paths:
        raise UsageError("give INPUT, the file(s) of rev_ids to score (- for standard input)")
    if output is None:
        raise UsageError("give --output, the file to write (*.parquet, *.jsonl or *.json)")
    default_catalog().resolve_all(common["models"])  # a misspelt model before the input
    keep = _keep(keep_columns)
    if no_shared_budget and not (common["budget"] and common["budget"].is_unlimited):
        log.warning(
            "--no-shared-budget: other lwbatch runs of this identity are not counted; "
            "together they may send more than the gateway allows and get 429s"
        )
    settings = RunSettings.of(
        common["models"],
        rate=common["budget"],
        tier=common["tier"],
        id_column=id_column,
        wiki_column=wiki_column,
        lang=lang,
        connection=Connection(
            endpoint=endpoint,
            token=token,
            credentials=oauth,
            contact=contact,
            timeout=timeout,
            verify=not insecure,
            catalog=common["catalog"],
        ),
        pacing=Pacing(
            concurrency=common["concurrency"],
            share=not no_shared_budget,
            state_dir=state_dir,
            gc_control=True,
        ),
        files=Files(format=output_format, restart=restart, retry_failed=retry_failed, cache=cache),
    )
    with _inputs(input_paths, Path(output), input_format, common, keep) as source:
        score_and_report(
            source,
            Path(output),
            settings,
            report_path=report_path,
            quiet=quiet,
            log_json=log_json,
            progress_every=progress_every,
            grace=grace,
            warn_no_contact=common["warn_no_contact"],
        )


@contextmanager
def _inputs(
    paths: tuple[str, ...],
    output: Path | None,
    input_format: str | None,
    common: dict[str, Any],
    keep: list[str] | str | None = None,
) -> Iterator[Source]:
    """The one source of every INPUT. Standard input is spooled to a hidden folder beside
    the output (it can be large), named so that the next run on that output sweeps it
    away if this one is killed; removed at the end. Without an output (plan), to the
    system's temporary folder."""
    from lwbatch.io.inputs import STDIN, open_inputs

    options = {k: common[k] for k in ("id_column", "lang", "wiki_column")}
    with ExitStack() as stack:
        spool_dir = None
        if STDIN in paths:
            if output is not None and output.parent.is_dir():
                spool_dir = output.with_name(f".{output.name}.stdin.{os.getpid()}.tmp")
                spool_dir.mkdir(exist_ok=True)
                stack.callback(shutil.rmtree, spool_dir, True)
            else:
                spool_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        yield open_inputs(
            paths,
            input_format=input_format,
            stdin=sys.stdin.buffer,
            spool_dir=spool_dir,
            keep_columns=keep,
            **options,
        )


def _keep(value: str | None) -> list[str] | str | None:
    if value is None:
        return None
    if value.strip() == "all":
        return "all"
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UsageError("--keep-columns: give column names (a,b) or all")
    return names


def _credentials(path: Path | None, token_url: str | None) -> Credentials | None:
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


def _token(token_file: Path | None) -> Token | None:
    if token_file is not None:
        return Token.from_file(token_file)
    value = os.environ.get("LIFTWING_TOKEN", "").strip()
    return Token(value) if value else None


def _budget(rate: str | None, endpoint: Endpoint) -> Budget | None:
    if rate is None:
        return None
    budget = Budget.parse(rate)
    if budget.is_unlimited and endpoint.is_external_gateway:
        raise UsageError(
            "--rate unlimited: the public API gateway enforces a tier budget "
            "(use --tier or N/PERIOD); unlimited is for --internal or --base-url"
        )
    return budget


def _catalog(ignore_coverage: bool) -> Catalog:
    catalog = default_catalog()
    return catalog.without_coverage() if ignore_coverage else catalog


def _positive(flag: str, value: int) -> int:
    if value < 1:
        raise UsageError(f"{flag} must be >= 1, got {value}")
    return value


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per family, one per line.")
def models(name: str | None, as_json: bool) -> None:
    """The model families lwbatch can score, with their names, request payloads, batch
    sizes, answers and, where the model's server lists them, its wikis.

    NAME (a model, e.g. articlequality) shows that family alone, with every wiki of its
    list. Rows of a wiki outside the list are refused up front (unsupported_wiki);
    `--ignore-coverage` on score and plan sends them anyway. Which wikis a revscoring
    model is deployed on is Lift Wing's to say: an undeployed one answers 404 and its
    column gets model_not_deployed.

    \b
    Example:
      lwbatch models articlequality
    """
    from lwbatch.protocol.catalog import names_of

    catalog = default_catalog()
    families = catalog.families
    if name is not None:
        family = catalog.resolve(name).family
        families = tuple(f for f in families if f is family)
    rows = [_family_row(f, names_of(f), wikis=name is not None) for f in families]
    if as_json:
        click.echo("\n".join(orjson.dumps(row).decode() for row in rows))
        return
    width = max(len(str(r["names"])) for r in rows)
    lines = [f"{'names':<{width}}  {'payload':<28} {'batch':>5}  {'prediction':<10}  wikis"]
    for r in rows:
        # The page goes by id or by title (outlink-topic-model).
        payload = ", ".join(r["payload"]).replace("page_id", "page_id|page_title")  # type: ignore[arg-type]
        note = "  (experimental: --internal or --base-url only)" if r["experimental"] else ""
        coverage = r["coverage"]
        listed = f"{coverage['count']} listed" if coverage else "-"  # type: ignore[index]
        lines.append(
            f"{r['names']:<{width}}  {payload:<28} {r['batch']:>5}  "
            f"{r['prediction']:<10}  {listed}{note}"
        )
    lines.append("")
    for kept in sorted({f.coverage for f in families if f.coverage}, key=lambda c: c.name):
        users = ", ".join(names_of(f) for f in families if f.coverage is kept)
        said = (
            f"{users}: {len(kept.wikis)} wikis, {kept.what}; read from {kept.repo} "
            f"{kept.path} at {kept.commit[:12]} ({kept.date})"
        )
        lines.append(textwrap.fill(said, width=100, subsequent_indent="  ", break_on_hyphens=False))
        if name is not None:
            lines += _listed_wikis(catalog.resolve(name), kept)
    if name is None:
        lines += [
            "WIKI is a database name: enwiki, dewiki, zh_yuewiki, enwiktionary, ...",
            "{wiki}-KIND (any WIKI-KIND above) scores each row with its own wiki's model.",
            "Out of scope (keyed by a title or a text, not a revision): article-country, "
            "langid, article-descriptions, edit-check, llm-*.",
        ]
    click.echo("\n".join(lines))


def _listed_wikis(spec: ModelSpec, listed: Coverage) -> list[str]:
    """A list's wikis, and those of them lwbatch refuses all the same (the server's code
    cannot reach them: its lookup or its host rewrite misses them)."""
    from lwbatch.wikis import wikis

    table = wikis()
    refused = {db: spec.refuses(table.from_dbname(db)) for db in sorted(listed.wikis)}
    lines = [textwrap.fill(" ".join(db for db, why in refused.items() if why is None), width=100)]
    unreachable = [f"{db}: {why}" for db, why in refused.items() if why is not None]
    if unreachable:
        lines.append(f"listed, but refused all the same ({len(unreachable)}):")
        lines += [f"  {reason}" for reason in unreachable]
    return lines


def _family_row(family: Family, names: str, *, wikis: bool) -> dict[str, object]:
    coverage = family.coverage
    described: dict[str, object] | None = None
    if coverage is not None:
        described = {
            "name": coverage.name,
            "count": len(coverage.wikis),
            "repo": coverage.repo,
            "path": coverage.path,
            "commit": coverage.commit,
            "date": coverage.date,
        }
        if wikis:
            described["wikis"] = sorted(coverage.wikis)
    return {
        "family": family.name,
        "names": names,
        "payload": list(family.payload),
        "batch": family.max_batch,
        "prediction": family.prediction,
        "probability": family.answer != "outlink",
        "experimental": family.experimental,
        "coverage": described,
    }


@cli.group()
def cache() -> None:
    """Inspect, export or prune a score cache (--cache)."""


_CACHE_PATH = click.argument("path", metavar="CACHE", type=click.Path(path_type=Path))


@cache.command("stats")
@_CACHE_PATH
def cache_stats(path: Path) -> None:
    """Entries per model: the trusted version's, and older ones no run uses again."""
    from lwbatch.cache import SqliteScoreCache

    store = SqliteScoreCache(path, read_only=True)
    try:
        entries = store.models()
    finally:
        store.close()
    width = max([len("model"), *(len(e.model) for e in entries)])
    lines = [f"{'model':<{width}}  {'version':<12} {'entries':>12} {'older versions':>15}"]
    lines += [
        f"{e.model:<{width}}  {e.version or '-':<12} {e.trusted:>12,} {e.stale:>15,}"
        for e in entries
    ]
    total = sum(e.trusted for e in entries)
    stale = sum(e.stale for e in entries)
    lines.append(
        f"{path}: {total:,} entries in use, {stale:,} of older versions, "
        f"{_size_with_wal(path) / 1e6:.1f} MB"
    )
    click.echo("\n".join(lines))


@cache.command("export")
@_CACHE_PATH
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Parquet file to write.",
)
@click.option("--all-versions", is_flag=True, help="Also the entries of older model versions.")
def cache_export(path: Path, output: Path, all_versions: bool) -> None:
    """Write the entries to a Parquet file (model, model_version, wiki, rev_id, prediction
    as JSON text, probability, error, error_message)."""
    from lwbatch.cache import EXPORT_SCHEMA, SqliteScoreCache
    from lwbatch.durability.atomic import write_parquet_atomic

    store = SqliteScoreCache(path, read_only=True)
    try:
        rows = write_parquet_atomic(
            output, EXPORT_SCHEMA, store.export(trusted_only=not all_versions)
        )
    finally:
        store.close()
    click.echo(f"{output}: {rows:,} entries")


@cache.command("prune")
@_CACHE_PATH
@click.option("--model", "model", help="Remove every entry of this model instead.")
def cache_prune(path: Path, model: str | None) -> None:
    """Remove the entries of older model versions (which no run uses again), or every
    entry of one model."""
    from lwbatch.cache import SqliteScoreCache

    store = SqliteScoreCache(path, must_exist=True)
    try:
        if model is not None:
            known = sorted(e.model for e in store.models())
            if model not in known:
                raise UsageError(
                    f"--model {model}: {path} holds no entries of it"
                    + (f" (it holds {', '.join(known)})" if known else " (it is empty)")
                )
        removed = store.prune(model=model)
    finally:
        store.close()
    click.echo(f"{path}: {removed:,} entries removed")


@cli.command()
@click.argument("input_paths", metavar="INPUT...", nargs=-1, required=True)
@_input_options
@click.option("--token-file", type=click.Path(path_type=Path), help="File holding the token.")
@click.option("--tier", type=click.Choice([t.value for t in Tier]), help="Gateway tier.")
@click.option("--rate", help="Budget as N/PERIOD (overrides --tier).")
@click.option(
    "--cache",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Score cache: count apart the answers it already has.",
)
@click.option(
    "--credentials",
    type=click.Path(dir_okay=False, path_type=Path),
    help="OAuth2 credentials file, as for score: without a token, one is asked for "
    "(the only request plan sends) and its claims choose the budget.",
)
@click.option("--token-url", help="OAuth2 token endpoint for --credentials.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def plan(
    input_paths: tuple[str, ...],
    models: tuple[str, ...],
    id_column: str,
    lang: str,
    input_format: str | None,
    wiki_column: str | None,
    ignore_coverage: bool,
    token_file: Path | None,
    credentials: Path | None,
    token_url: str | None,
    tier: str | None,
    rate: str | None,
    cache: Path | None,
    as_json: bool,
) -> None:
    """What scoring INPUT would cost, sending no request: rows, distinct keys, requests
    per model and the hours they take at each tier and at the budget `score` would use
    with the same flags and environment."""
    from lwbatch.run import plan_file

    default_catalog().resolve_all(split_model_names(models))
    common = {"id_column": id_column, "lang": lang, "wiki_column": wiki_column}
    with _inputs(input_paths, None, input_format, common) as source:
        planned = plan_file(
            source,
            models=split_model_names(models),
            rate=rate,
            tier=tier,
            id_column=id_column,
            lang=lang,
            wiki_column=wiki_column,
            connection=Connection(
                token=_token(token_file),
                credentials=_credentials(credentials, token_url),
                catalog=_catalog(ignore_coverage),
            ),
            files=Files(cache=cache),
        )
    if as_json:
        click.echo(orjson.dumps(planned.to_dict()).decode())
    else:
        click.echo(for_cli(planned.render()))


@cli.command()
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help="File holding the OAuth2 bearer token (else LIFTWING_TOKEN).",
)
def token(token_file: Path | None) -> None:
    """Show what the bearer token says about itself, without verifying it: the client
    application key (quote it when you ask for a higher tier), subject, expiry, rate
    limit, and the budget `lwbatch score` would use. Never prints the token."""
    from lwbatch.tokens import TokenClaims, choose_budget

    value = _token(token_file)
    if value is None:
        raise UsageError("no token: set LIFTWING_TOKEN or give --token-file")
    claims = TokenClaims.of(value)
    chosen = choose_budget(token=value)
    lines = []
    if claims is None:
        lines.append("token               not a JWT: lwbatch cannot read its claims")
    else:
        now = datetime.now(UTC)
        lines += [
            f"client id (aud)     {claims.client_id or '-'}",
            f"subject (sub)       {claims.subject or '-'}",
            f"issued (iat)        {_when(claims.issued, now, past='')}",
            f"expires (exp)       {_when(claims.expires, now, past='expired')}",
            "rate limit          "
            + (
                f"{claims.ratelimit.requests:,} per {claims.ratelimit.period:g} s"
                if claims.ratelimit
                else "-"
            ),
            f"rate-limit class    {claims.rate_class or '-'}",
        ]
    lines.append(f"budget              {chosen.budget.describe()} ({for_cli(chosen.reason)})")
    lines.append(
        "A tier change takes effect only once the token is issued again: create a new "
        "token after your tier is raised."
    )
    click.echo("\n".join(lines))


def _size_with_wal(path: Path) -> int:
    """The cache's bytes on disk, its write-ahead log included."""
    parts = (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
    return sum(p.stat().st_size for p in parts if p.exists())


def _client_pair(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    client, sep, secret = value.partition(":")
    if not sep or not client or not secret:
        raise UsageError("--oauth-client: give ID:SECRET, both not empty")
    return client, secret


def _when(moment: datetime | None, now: datetime, *, past: str, future: str = "in") -> str:
    if moment is None:
        return "-"
    seconds = int((moment - now).total_seconds())
    span = abs(seconds)
    if span >= 86400:
        length = f"{span // 86400} d {span % 86400 // 3600} h"
    elif span >= 3600:
        length = f"{span // 3600} h {span % 3600 // 60:02d} m"
    else:
        length = f"{span // 60} m {span % 60:02d} s"
    said = f"{past} {length} ago".lstrip() if seconds < 0 else f"{future} {length}"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({said})"


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--latency",
    default="0",
    show_default=True,
    help="SECONDS, uniform:LOW:HIGH, lognormal:MEDIAN:SIGMA, "
    "or liftwing (median 0.45 s, p99 ~5 s).",
)
@click.option(
    "--error-rate", type=float, default=0.0, help="Share of requests answered 500/502/503/504."
)
@click.option(
    "--reset-rate", type=float, default=0.0, help="Share of connections cut without an answer."
)
@click.option("--hang-rate", type=float, default=0.0, help="Share of requests never answered.")
@click.option("--undeployed", multiple=True, help="Model that answers 404 (repeatable).")
@click.option(
    "--max-rev-id",
    type=int,
    default=2_000_000_000,
    show_default=True,
    help="Larger rev_ids are unknown revisions.",
)
@click.option(
    "--problem",
    "problems",
    multiple=True,
    metavar="KIND:REV,REV",
    help="Revisions with a problem, answered as each server answers them (repeatable): "
    "missing, deleted, parent_missing, hidden_user, poison (fails its whole revertrisk "
    "batch), empty, not_wikitext, generic.",
)
@click.option(
    "--unsupported",
    multiple=True,
    metavar="MODEL:LANG,LANG",
    help="Languages a model does not serve (repeatable; readability and "
    "reference-need/-risk refuse languages). Default: readability:vo.",
)
@click.option(
    "--budget", help="Gateway budget N/PERIOD; over it the emulator answers 429 + Retry-After."
)
@click.option(
    "--retry-after-503",
    type=int,
    metavar="SECONDS",
    help="Emulated 503s carry Retry-After: SECONDS (default: no header).",
)
@click.option(
    "--require-host",
    is_flag=True,
    help="Route by the Host header as the internal endpoints do: 404 unless it is "
    "MODEL.NAMESPACE.wikimedia.org.",
)
@click.option(
    "--require-token",
    metavar="TOKEN",
    help="Answer 401 to requests without this bearer token (or one it issued).",
)
@click.option(
    "--oauth-client",
    metavar="ID:SECRET",
    help="Serve an OAuth2 token endpoint at /oauth2/access_token for this client "
    "(client credentials grant); its tokens expire after --token-uses requests.",
)
@click.option("--refresh-token", help="Also take the refresh token grant with this token.")
@click.option(
    "--token-uses",
    type=int,
    default=1_000_000,
    show_default=True,
    help="Requests each issued token serves before it expires (401).",
)
@click.option("--seed", type=int, default=0, show_default=True)
def emulate(
    host: str,
    port: int,
    latency: str,
    error_rate: float,
    reset_rate: float,
    hang_rate: float,
    undeployed: tuple[str, ...],
    max_rev_id: int,
    problems: tuple[str, ...],
    unsupported: tuple[str, ...],
    budget: str | None,
    retry_after_503: int | None,
    require_host: bool,
    require_token: str | None,
    oauth_client: str | None,
    refresh_token: str | None,
    token_uses: int,
    seed: int,
) -> None:
    """Serve a local Lift Wing emulator (deterministic scores) until Ctrl-C.

    \b
    Example:
      lwbatch emulate --port 8080 --latency liftwing --error-rate 0.05 \\
          --unsupported readability:vo,zh-yue --retry-after-503 5
      lwbatch score revs.parquet -o out.parquet -m enwiki-damaging \\
          --base-url http://127.0.0.1:8080
    \b
    OAuth2 tokens that expire every 500 requests:
      lwbatch emulate --oauth-client me:s3cret --token-uses 500
      LIFTWING_CLIENT_ID=me LIFTWING_CLIENT_SECRET=s3cret lwbatch score ... \\
          --base-url http://127.0.0.1:8080 \\
          --token-url http://127.0.0.1:8080/oauth2/access_token
    """
    # The emulator is an aiohttp web application, and aiohttp serves on asyncio only.
    import asyncio

    from lwbatch.testing.emulator import (
        Emulator,
        EmulatorConfig,
        Latency,
        parse_problems,
        parse_unsupported,
        serve,
    )

    config = EmulatorConfig(
        latency=Latency.parse(latency),
        error_rate=error_rate,
        reset_rate=reset_rate,
        hang_rate=hang_rate,
        undeployed=frozenset(split_model_names(undeployed)),
        max_rev_id=max_rev_id,
        problems=parse_problems(problems),
        unsupported=parse_unsupported(unsupported),
        budget=Rate.parse(budget) if budget else None,
        retry_after_503=retry_after_503,
        track_pairs=False,
        seed=seed,
        token=require_token,
        require_host=require_host,
        oauth_client=_client_pair(oauth_client),
        refresh_token=refresh_token,
        token_uses=_positive("--token-uses", token_uses),
    )

    async def main() -> None:
        freeze_heap()
        runner, bound = await serve(Emulator(config), host, port)
        click.echo(f"Lift Wing emulator on http://{host}:{bound} (Ctrl-C to stop)", err=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


@cli.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("lwbatch-demo.parquet"),
    show_default=True,
    help="Where to write the demo's scores.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def demo(output: Path, quiet: bool) -> None:
    """Score the shipped sample file against a local emulator, and show the result."""
    from lwbatch.cli.demo import run_demo

    run_demo(output, quiet=quiet)


@cli.command()
@click.option(
    "--tier",
    type=click.Choice([t.value for t in Tier]),
    default=Tier.ANONYMOUS.value,
    show_default=True,
    help="The gateway tier whose budget to hold.",
)
@click.option(
    "--compress",
    type=float,
    default=360.0,
    show_default=True,
    help="Shrink the hourly window this many times, same rate (360: an hour in 10 s).",
)
@click.option("--rate", help="A budget N/PERIOD instead of a tier (required with --real-endpoint).")
@click.option("--seconds", type=float, default=60.0, show_default=True, help="How long to run.")
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    help="Model to score (repeatable). Default: enwiki-damaging, enwiki-goodfaith, "
    "revertrisk-language-agnostic.",
)
@click.option(
    "--latency",
    default="liftwing",
    show_default=True,
    help="The emulator's latency (as for `lwbatch emulate`).",
)
@click.option(
    "--concurrency", type=int, default=None, help="Fix the requests in flight (default: adapt)."
)
@click.option(
    "--chart",
    type=click.Path(path_type=Path),
    default=Path("lwbatch-bench.png"),
    show_default=True,
    help="PNG of requests/second over time against the budget (needs lwbatch[bench]).",
)
@click.option("--no-chart", is_flag=True, help="Do not draw the chart.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write figures here.")
@click.option("--base-url", help="Measure against this endpoint instead of a fresh emulator.")
@click.option(
    "--real-endpoint",
    is_flag=True,
    help="Allow --base-url to be a real endpoint (sends real requests; needs a --rate "
    "of at most 1/s).",
)
@click.option("--contact", envvar="LWBATCH_CONTACT", help="Your e-mail or URL for the User-Agent.")
@click.option(
    "--processes",
    type=int,
    default=1,
    show_default=True,
    help="Run this many benchmark processes at once against one emulator, sharing the "
    "budget as concurrent `lwbatch score` runs do; shows each one's share.",
)
@click.option(
    "--no-shared-budget",
    is_flag=True,
    help="Each process keeps a budget of its own (to compare: together they go over it).",
)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), hidden=True)
@click.option("--sent-times", is_flag=True, hidden=True)  # for --processes: each send time
def bench(
    tier: str,
    compress: float,
    rate: str | None,
    seconds: float,
    models: tuple[str, ...],
    latency: str,
    concurrency: int | None,
    chart: Path,
    no_chart: bool,
    json_path: Path | None,
    base_url: str | None,
    real_endpoint: bool,
    contact: str | None,
    processes: int,
    no_shared_budget: bool,
    state_dir: Path | None,
    sent_times: bool,
) -> None:
    """Measure throughput against a tier's budget (time-compressed) on the emulator.

    \b
    Example:
      lwbatch bench --tier authenticated --seconds 60
    \b
    Three runs of one identity side by side, sharing its budget:
      lwbatch bench --rate 300/3s --seconds 20 --processes 3
    """
    import anyio

    from lwbatch.cli.bench import DEFAULT_MODELS, chart_available, compressed, draw_chart, run_bench
    from lwbatch.testing.emulator import Latency, spawned

    if seconds <= 0:
        raise UsageError(f"--seconds must be > 0, got {seconds:g}")
    if concurrency is not None:
        _positive("--concurrency", concurrency)
    if not no_chart:
        if not chart_available():
            raise UsageError(
                "--chart needs matplotlib: pip install 'lwbatch[bench]' (or add --no-chart)"
            )
        if not chart.parent.is_dir():
            raise UsageError(f"--chart {chart}: no such directory {chart.parent}")
    budget = Budget.parse(rate) if rate else compressed(Tier(tier), compress)
    if budget.is_unlimited:
        raise UsageError("--rate unlimited: lwbatch bench measures against a budget")
    endpoint = Endpoint(base_url=base_url) if base_url else None
    if endpoint is not None and not endpoint.is_loopback:
        if not real_endpoint:
            raise UsageError(
                f"--base-url {base_url} is not a local emulator: add --real-endpoint "
                "to send real requests (with a tiny --rate)"
            )
        if rate is None or budget.rate > 1.0:
            raise UsageError(
                "--real-endpoint needs --rate of at most 1 request per second, e.g. 30/min"
            )
    Latency.parse(latency)
    names = list(models) or list(DEFAULT_MODELS)
    token = _token(None) if endpoint is not None else None
    where = base_url or f"the emulator (latency {latency})"
    if _positive("--processes", processes) > 1 and endpoint is not None:
        raise UsageError("--processes runs against a fresh emulator: leave out --base-url")
    log.info("bench: budget %s for %g s against %s", budget.describe(), seconds, where)

    def measure(target: Endpoint, folder: Path | None) -> Any:
        return anyio.run(
            partial(
                run_bench,
                budget=budget,
                seconds=seconds,
                models=names,
                connection=Connection(endpoint=target, token=token, contact=contact),
                pacing=Pacing(
                    concurrency=concurrency,
                    share=not no_shared_budget,
                    state_dir=folder if not no_shared_budget else None,
                ),
            )
        )

    if processes > 1:
        _bench_processes(
            processes,
            budget,
            chart=None if no_chart else chart,
            json_path=json_path,
            latency=latency,
            shared=not no_shared_budget,
            # What each process is told: the same budget, run and models.
            child=[
                *(["--rate", rate] if rate else ["--tier", tier, "--compress", f"{compress!r}"]),
                *(arg for name in names for arg in ("-m", name)),
                "--seconds",
                repr(seconds),
                *(["--concurrency", str(concurrency)] if concurrency else []),
                *(["--no-shared-budget"] if no_shared_budget else []),
                "--no-chart",
                "--sent-times",
            ],
        )
        return
    if endpoint is not None:
        result = measure(endpoint, state_dir)
    else:
        gateway = str(budget.windows[0])
        # A fresh emulator is a new identity: its ledger goes with it.
        with (
            spawned("--latency", latency, "--budget", gateway) as url,
            tempfile.TemporaryDirectory(prefix="lwbatch-bench-") as folder,
        ):
            result = measure(Endpoint(base_url=url), Path(folder))
    click.echo(result.render(), err=True)
    if not no_chart:
        what = (
            f"budget {budget.describe()}"
            if rate
            else f"{tier} tier, hour compressed {compress:g}x ({budget.describe()})"
        )
        title = f"lwbatch bench: {what}, against {where}"
        draw_chart(result, chart, title=title)
        click.echo(f"\nchart: {chart}", err=True)
    if json_path is not None:
        write_json(json_path, result.to_dict(sent=sent_times))


def _bench_processes(
    processes: int,
    budget: Budget,
    *,
    chart: Path | None,
    json_path: Path | None,
    latency: str,
    shared: bool,
    child: list[str],
) -> None:
    from lwbatch.cli.bench_processes import draw_together, run_processes
    from lwbatch.testing.emulator import spawned

    gateway = str(budget.windows[0])
    with (
        spawned("--latency", latency, "--budget", gateway) as url,
        tempfile.TemporaryDirectory(prefix="lwbatch-bench-") as folder,
    ):
        args = [*child, "--base-url", url, "--state-dir", folder]
        together = run_processes(processes, args, budget, shared=shared)
    click.echo(together.render(), err=True)
    if chart is not None:
        how = "one shared budget" if shared else "a budget each"
        title = f"lwbatch bench: {processes} processes, {how} ({budget.describe()})"
        draw_together(together, chart, title=title)
        click.echo(f"\nchart: {chart}", err=True)
    if json_path is not None:
        write_json(json_path, together.to_dict())


class _CliFormatter(logging.Formatter):
    """Library log lines in command-line words (`wiki_column` -> --wiki-column)."""

    def format(self, record: logging.LogRecord) -> str:
        return for_cli(super().format(record))


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line on stderr and an exit code for every failure."""
    logging.basicConfig(
        format="lwbatch: %(levelname)s: %(message)s", level=logging.WARNING, force=True
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_CliFormatter("lwbatch: %(levelname)s: %(message)s"))
    logging.getLogger("lwbatch").setLevel(logging.INFO)
    # With --log-json even the last word is a JSON line, for the scheduler reading stderr.
    as_json = "--log-json" in (sys.argv[1:] if argv is None else argv)

    def say(kind: str, message: str, code: int) -> int:
        if as_json:
            event = {"event": "error", "kind": kind, "message": message, "exit_code": code}
            click.echo(orjson.dumps(event).decode(), err=True)
        else:
            click.echo(f"lwbatch: {kind}: {message}" if kind else f"lwbatch: {message}", err=True)
        return code

    try:
        cli.main(args=argv, prog_name="lwbatch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        return say("error", exc.format_message(), 2)
    except (click.Abort, KeyboardInterrupt):
        return say("", "interrupted", 130)
    except LWBatchError as exc:
        hint = "; `lwbatch models` lists them" if isinstance(exc, UnknownModelError) else ""
        return say("error", f"{for_cli(str(exc))}{hint}", exc.exit_code)
    except Exception as exc:  # a bug: say so in one line; the traceback is opt-in
        if os.environ.get("LWBATCH_DEBUG"):
            raise
        return say(
            "internal error",
            f"{type(exc).__name__}: {exc} (set LWBATCH_DEBUG=1 for the traceback)",
            1,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
