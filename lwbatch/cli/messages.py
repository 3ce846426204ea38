"""Library messages in command-line words.

Library errors name a setting as the Python parameter that takes it, in backticks
(`rate`, `restart=True`, `id_column`); a CLI user sets it with a flag or an
environment variable instead. :func:`for_cli` rewrites each such reference, once, where
the CLI prints the error.
"""

from __future__ import annotations

import re

# Parameter (or `parameter=VALUE` for switches) -> what a CLI user types, after the
# options of lwbatch/cli/commands.py. A parameter with no entry just loses its backticks.
FLAGS: dict[str, str] = {
    "base_url": "--base-url",
    "budget": "--rate",
    "concurrency": "--concurrency",
    "cache": "--cache",
    "contact": "--contact",
    "credentials": "--credentials",
    "endpoint": "--base-url",
    "error_rate": "--error-rate",
    "format": "--format",
    "grace": "--grace",
    "hang_rate": "--hang-rate",
    "id_col": "--id-column",
    "keep_columns": "--keep-columns",
    "id_column": "--id-column",
    "input_format": "--input-format",
    "lang": "--lang",
    "latency": "--latency",
    "models": "-m/--model",
    "output": "--output",
    "rate": "--rate",
    "slots": "--slots",
    "share_budget=False": "--no-shared-budget",
    "share=False": "--no-shared-budget",
    "state_dir": "--state-dir",
    "reset_rate": "--reset-rate",
    "restart=True": "--restart",
    "retry_failed=False": "--no-retry-failed",
    "retry_failed=True": "--retry-failed",
    "tier": "--tier",
    "timeout": "--timeout",
    "token": "LIFTWING_TOKEN or --token-file",
    "token_file": "--token-file",
    "token_url": "--token-url",
    "verify=False": "--insecure",
    "wiki_col": "--wiki-column",
    "wiki_column": "--wiki-column",
}

_REFERENCE = re.compile(r"`(\w+)(?:=([^`\s]+))?`")


def for_cli(message: str) -> str:
    """`message` with every backticked parameter replaced by its flag.

    `concurrency=8` becomes `--concurrency 8`: a flag that takes a value keeps it.
    """

    def flag(match: re.Match[str]) -> str:
        reference, name, value = match.group(0)[1:-1], match.group(1), match.group(2)
        if reference in FLAGS:
            return FLAGS[reference]
        if value is not None and name in FLAGS:
            return f"{FLAGS[name]} {value}"
        return reference

    return _REFERENCE.sub(flag, message)
