"""`lwbatch token`: what a bearer token says about itself, never the token."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
import cloup

from lwbatch.cli.messages import for_cli
from lwbatch.cli.options import token_from
from lwbatch.errors import UsageError


@cloup.command()
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

    value = token_from(token_file)
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
            f"issued (iat)        {when(claims.issued, now, past='')}",
            f"expires (exp)       {when(claims.expires, now, past='expired')}",
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


def when(moment: datetime | None, now: datetime, *, past: str, future: str = "in") -> str:
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


__all__ = ["token", "when"]
