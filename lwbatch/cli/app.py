"""The `lwbatch` command: argv -> settings values -> one library call -> exit code.

Exit codes: 0 the run completed (per-revision errors are data), 1 the run was aborted
(authentication, no model deployed, output not writable), 2 usage or input error,
130/143 interrupted by SIGINT/SIGTERM (progress saved).

Each command lives in a module of its own (lwbatch/cli/commands/); the options they
share, grouped by concern, and the settings values each group builds, in
lwbatch/cli/options.py. Help is grouped with cloup: its option groups are declared
with the options themselves, so a group shared by score, plan and bench is one object.
"""

from __future__ import annotations

import logging
import os
import sys

import click
import cloup
import orjson
from click.shell_completion import shell_complete

from lwbatch._version import __version__
from lwbatch.cli import stops
from lwbatch.cli.commands.bench import bench
from lwbatch.cli.commands.cache import cache
from lwbatch.cli.commands.demo import demo
from lwbatch.cli.commands.emulate import emulate
from lwbatch.cli.commands.follow import follow
from lwbatch.cli.commands.models import models
from lwbatch.cli.commands.plan import plan
from lwbatch.cli.commands.score import score
from lwbatch.cli.commands.token import token
from lwbatch.cli.messages import for_cli
from lwbatch.errors import LWBatchError, UnknownModelError


@cloup.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    sections=[
        cloup.Section("Scoring", [score, follow, plan, demo]),
        cloup.Section("Models, tokens and caches", [models, token, cache]),
        cloup.Section("Measuring", [emulate, bench]),
    ],
)
@click.version_option(__version__, prog_name="lwbatch")
def cli() -> None:
    """Bulk-score Wikipedia revisions with Lift Wing models, inside your request budget."""


COMPLETE_VAR = "_LWBATCH_COMPLETE"


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
        # Not cli.main(): on Ctrl-C it writes an empty line before its Abort. What it
        # would do first, shell completion (_LWBATCH_COMPLETE=bash_source), is done here.
        instruction = os.environ.get(COMPLETE_VAR)
        if instruction:
            return shell_complete(cli, {}, "lwbatch", COMPLETE_VAR, instruction)
        args = sys.argv[1:] if argv is None else list(argv)
        with cli.make_context("lwbatch", args) as ctx:
            cli.invoke(ctx)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        return say("error", exc.format_message(), 2)
    except (click.Abort, KeyboardInterrupt):
        return say("", stops.message(), stops.exit_code())
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
