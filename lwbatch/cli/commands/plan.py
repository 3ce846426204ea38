"""`lwbatch plan`: what scoring an input would cost, sending no request."""

from __future__ import annotations

from typing import Any

import click
import cloup
import orjson

from lwbatch.cli.commands.score import open_cli_inputs
from lwbatch.cli.messages import for_cli
from lwbatch.cli.options import (
    BUDGET,
    CACHE,
    CONNECTION,
    INPUT,
    MODELS,
    budget_of,
    connection_of,
    flag,
    keys_of,
    models_of,
    take,
)
from lwbatch.cli.profile import CONFIG
from lwbatch.settings import Files


@cloup.command()
@cloup.argument("input_paths", metavar="INPUT...", nargs=-1, required=True)
@MODELS
@INPUT
@CONNECTION
@BUDGET
@cloup.option_group("Cache", CACHE)
@cloup.option_group(
    "Output", flag("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
)
@cloup.option_group("Profile", CONFIG)
def plan(input_paths: tuple[str, ...], **given: Any) -> None:
    """What scoring INPUT would cost, sending no request: rows, distinct keys, requests
    per model and the hours they take at each tier and at the budget `score` would use
    with the same flags, profile and environment.

    Every flag that changes what `score` sends is taken here too, read the same way.
    With OAuth2 credentials and no token, the token is asked for (the only request plan
    sends), as its claims choose the budget.

    \b
    Example:
      lwbatch plan revisions.parquet -m enwiki-damaging -m revertrisk-language-agnostic
    """
    from lwbatch.run import plan_file

    (as_json,) = take(given, "as_json")
    models, catalog = models_of(given)
    keys = keys_of(given)
    input_format, cache = take(given, "input_format", "cache")
    connection = connection_of(given, catalog)
    budget = budget_of(given)
    assert not given, f"flags read by no group: {sorted(given)}"
    with open_cli_inputs(input_paths, None, input_format, keys) as source:
        planned = plan_file(
            source, models=models, **budget, **keys, connection=connection, files=Files(cache=cache)
        )
    if as_json:
        click.echo(orjson.dumps(planned.to_dict()).decode())
    else:
        click.echo(for_cli(planned.render()))


__all__ = ["plan"]
