"""Library messages name parameters; the CLI prints them with its flags (cli/messages.py)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import lwbatch
from lwbatch.cli.messages import flags, for_cli
from lwbatch.config import Budget, Endpoint, Token
from lwbatch.errors import AuthenticationError, InputError, UsageError
from lwbatch.io.inputs import open_source
from lwbatch.protocol.catalog import default_catalog


@pytest.mark.parametrize(
    ("library", "cli_words"),
    [
        (
            "`rate` '1000/xyz' is not N/PERIOD; write e.g. 50000/h, 1000/10s or 20/s",
            "--rate '1000/xyz' is not N/PERIOD; write e.g. 50000/h, 1000/10s or 20/s",
        ),
        ("pass `restart=True` to replace it", "pass --restart to replace it"),
        ("name the id column with `id_column`", "name the id column with --id-column"),
        ("`timeout` must be > 0 seconds, got -1", "--timeout must be > 0 seconds, got -1"),
        ("`budget` or `tier`", "--rate or --tier"),
        ("check `endpoint`", "check --endpoint"),
        ("put it in `token`", "put it in LIFTWING_TOKEN or --token-file"),
        ("pass `retry_failed=False`", "pass --no-retry-failed"),
        ("try `concurrency=8`", "try --concurrency 8"),
        ("name one with `models`", "name one with -m/--model"),
        # No flag for these: the backticks go, the words stay.
        ("`journal=False` or `restart=False`", "journal=False or restart=False"),
        ("as `lwbatch emulate` does", "as `lwbatch emulate` does"),
    ],
)
def test_parameters_become_flags(library: str, cli_words: str) -> None:
    assert for_cli(library) == cli_words


def message(error: pytest.ExceptionInfo[Exception]) -> tuple[str, str]:
    return str(error.value), for_cli(str(error.value))


def test_library_errors_name_parameters_and_read_as_flags_in_the_cli(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as error:
        Budget.parse("fast")
    assert message(error) == (
        "`rate` 'fast' is not N/PERIOD; write e.g. 50000/h, 1000/10s or 20/s",
        "--rate 'fast' is not N/PERIOD; write e.g. 50000/h, 1000/10s or 20/s",
    )
    with pytest.raises(UsageError) as error:
        Endpoint(base_url="https://user:pw@lift.invalid")
    assert message(error) == (
        "`base_url` must not hold credentials (user:password@); put a token in `token` instead",
        "--endpoint must not hold credentials (user:password@); "
        "put a token in LIFTWING_TOKEN or --token-file instead",
    )
    with pytest.raises(UsageError) as error:
        Token.from_file(tmp_path / "none")
    assert message(error) == (
        f"`token_file` {tmp_path / 'none'}: cannot read it (FileNotFoundError)",
        f"--token-file {tmp_path / 'none'}: cannot read it (FileNotFoundError)",
    )
    with pytest.raises(UsageError) as error:
        default_catalog().resolve_all([])
    assert message(error)[1] == "no model given: name at least one with -m/--model"
    (tmp_path / "a.csv").write_text("id\n1\n")
    with pytest.raises(InputError) as error:
        open_source(tmp_path / "a.csv", id_column="rev_id")
    assert message(error)[0].endswith("; name the id column with `id_column`")
    assert message(error)[1].endswith("; name the id column with --id-column")
    auth = str(AuthenticationError(url="https://lift.invalid"))
    assert "put it in `token`" in auth
    assert "put it in LIFTWING_TOKEN or --token-file" in for_cli(auth)


def test_the_flag_of_each_parameter_comes_from_the_options_themselves() -> None:
    table = flags()
    expected = {
        "models": "-m/--model",
        "rate": "--rate",
        "budget": "--rate",
        "tier": "--tier",
        "endpoint": "--endpoint",
        "base_url": "--endpoint",
        "token": "LIFTWING_TOKEN or --token-file",
        "share=False": "--no-shared-budget",
        "share_budget=False": "--no-shared-budget",
        "retry_failed=True": "--retry-failed",
        "retry_failed=False": "--no-retry-failed",
        "restart=True": "--restart",
        "verify=False": "--insecure",
        "id_column": "--id-column",
        "id_col": "--id-column",
        "wiki_column": "--wiki-column",
        "keep_columns": "--keep-columns",
        "format": "--format",
        "output": "--output",
        "state_dir": "--state-dir",
        "slots": "--slots",
        "grace": "--grace",
        "error_rate": "--error-rate",
        "latency": "--latency",
    }
    assert {k: table.get(k) for k in expected} == expected
    # Hidden spellings of lwbatch 0.1 are never what a message tells a user to type.
    assert not {"--base-url", "--internal", "--budget"} & set(table.values())


# A literal that names a CLI flag or an environment variable the CLI reads.
CLI_WORDS = re.compile(r"(?<![\w-])--[a-z{]|LIFTWING_TOKEN|LWBATCH_[A-Z]")
ALLOWED = {
    # Not a message: the emulator starts `lwbatch emulate` in a process of its own.
    ("testing/emulator.py", "--port"),
    # Not a message: where shared budgets live, read as XDG_CACHE_HOME is, so that the
    # CLI and a notebook's lwbatch.score find the same ledger.
    ("pacing/shared.py", "LWBATCH_STATE_DIR"),
    ("pacing/shared.py", "LWBATCH_STATE_DIR {}"),
}


def literals(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every string literal but docstrings; an f-string with `{}` for each field."""
    skip = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)  # read as parts of the whole
            parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
            yield node.lineno, "".join(map(str, parts))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in skip:
                yield node.lineno, node.value


def test_library_messages_name_no_flag_and_no_cli_environment_variable() -> None:
    package = Path(lwbatch.__file__).parent
    found = [
        f"lwbatch/{relative}:{line}: {text!r}"
        for path in sorted(package.rglob("*.py"))
        if (relative := path.relative_to(package).as_posix()).split("/")[0] != "cli"
        for line, text in literals(ast.parse(path.read_text(encoding="utf-8")))
        if CLI_WORDS.search(text) and (relative, text) not in ALLOWED
    ]
    assert not found, "\n".join(["library code speaks CLI (see lwbatch/cli/messages.py):", *found])
