"""Library messages in command-line words.

Library errors name a setting as the Python parameter that takes it, in backticks
(`rate`, `restart=True`, `id_column`); a CLI user sets it with a flag or an
environment variable instead. :func:`for_cli` rewrites each such reference, once, where
the CLI prints the error.
"""

from __future__ import annotations

import functools
import re


@functools.cache
def flags() -> dict[str, str]:
    """Parameter (or `parameter=VALUE` for a switch) -> what a CLI user types: derived
    from the options of every command (lwbatch/cli/options.py's `sets`, else the
    option's own name). A parameter with no entry just loses its backticks."""
    import click

    from lwbatch.cli.app import cli
    from lwbatch.cli.options import Flag

    table: dict[str, str] = {}
    named: dict[str, str] = {}
    commands: list[click.Command] = [cli]
    while commands:
        command = commands.pop()
        if isinstance(command, click.Group):
            commands += command.commands.values()
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or param.name is None:
                continue
            longs = [o for o in param.opts if o.startswith("--")]
            if not longs:
                continue
            if isinstance(param, Flag):
                switches = [longs[0], *param.secondary_opts]
                for index, setting in enumerate(param.sets):
                    said = param.flag_name() if index == 0 else longs[0]
                    if "=" in setting and param.secondary_opts:
                        said = switches[min(index, len(switches) - 1)]
                    table.setdefault(setting, said)
            elif not param.is_flag:
                named.setdefault(param.name, longs[0])
    return {**named, **table}


_REFERENCE = re.compile(r"`(\w+)(?:=([^`\s]+))?`")


def for_cli(message: str) -> str:
    """`message` with every backticked parameter replaced by its flag.

    `concurrency=8` becomes `--concurrency 8`: a flag that takes a value keeps it.
    """

    def flag(match: re.Match[str]) -> str:
        reference, name, value = match.group(0)[1:-1], match.group(1), match.group(2)
        table = flags()
        if reference in table:
            return table[reference]
        if value is not None and name in table:
            return f"{table[name]} {value}"
        return reference

    return _REFERENCE.sub(flag, message)
