"""`lwbatch emulate`: a local Lift Wing emulator to score against."""

from __future__ import annotations

from typing import Any

import click
import cloup

from lwbatch.cli.options import positive
from lwbatch.cli.scoring import freeze_heap
from lwbatch.config import Rate
from lwbatch.errors import UsageError
from lwbatch.protocol.catalog import split_model_names


@cloup.command()
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
@click.option("--budget", "old_budget", hidden=True)  # lwbatch 0.1's spelling of --rate
@click.option(
    "--rate",
    help="The gateway's budget N/PERIOD, as lwbatch score takes it; over it the emulator "
    "answers 429 with Retry-After.",
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
@click.option(
    "--track-pairs",
    is_flag=True,
    help="Count the (model, wiki, rev_id) answered, and answered twice, in "
    "/_emulator/stats (memory grows with them).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--stream-rate",
    type=float,
    default=20.0,
    show_default=True,
    help="Events per second of the revision-create stream at /v2/stream/... .",
)
@click.option(
    "--stream-history",
    type=float,
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="How far back the stream starts (what --since can reach).",
)
@click.option(
    "--stream-retention",
    type=float,
    metavar="SECONDS",
    help="Keep only this much of the stream: an older position resumes at a gap.",
)
@click.option(
    "--stream-drop-after",
    type=int,
    metavar="N",
    help="Drop each stream connection after N events.",
)
def emulate(host: str, port: int, **given: Any) -> None:
    """Serve a local Lift Wing emulator (deterministic scores) until Ctrl-C.

    \b
    Example:
      lwbatch emulate --port 8080 --latency liftwing --error-rate 0.05 \\
          --unsupported readability:vo,zh-yue --retry-after-503 5
      lwbatch score revs.parquet -o out.parquet -m enwiki-damaging \\
          --endpoint http://127.0.0.1:8080
    \b
    Its revision-create stream, for lwbatch follow:
      lwbatch follow -m enwiki-damaging -o scores/ --endpoint http://127.0.0.1:8080 \\
          --stream-url http://127.0.0.1:8080/v2/stream/mediawiki.revision-create
    \b
    OAuth2 tokens that expire every 500 requests:
      lwbatch emulate --oauth-client me:s3cret --token-uses 500
      LIFTWING_CLIENT_ID=me LIFTWING_CLIENT_SECRET=s3cret lwbatch score ... \\
          --endpoint http://127.0.0.1:8080 \\
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
    from lwbatch.testing.stream import StreamConfig

    rate = given.pop("rate") or given.pop("old_budget")
    stream = StreamConfig(
        rate=given.pop("stream_rate"),
        history=given.pop("stream_history"),
        retention=given.pop("stream_retention"),
        drop_after=given.pop("stream_drop_after"),
    )
    config = EmulatorConfig(
        stream=stream,
        latency=Latency.parse(given.pop("latency")),
        undeployed=frozenset(split_model_names(given.pop("undeployed"))),
        problems=parse_problems(given.pop("problems")),
        unsupported=parse_unsupported(given.pop("unsupported")),
        budget=Rate.parse(rate) if rate else None,
        track_pairs=given.pop("track_pairs"),
        token=given.pop("require_token"),
        oauth_client=_client_pair(given.pop("oauth_client")),
        token_uses=positive("--token-uses", given.pop("token_uses")) or 1,
        **{k: v for k, v in given.items() if k != "old_budget"},
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


def _client_pair(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    client, sep, secret = value.partition(":")
    if not sep or not client or not secret:
        raise UsageError("--oauth-client: give ID:SECRET, both not empty")
    return client, secret


__all__ = ["emulate"]
