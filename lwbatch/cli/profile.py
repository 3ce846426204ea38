"""`--config FILE`: a TOML profile of what rarely changes between runs (where requests go,
as whom, the budget, the contact, where shared budgets live, time-outs), read as the
defaults of the command's flags. A flag given on the command line (or its environment
variable) wins over the profile.

    endpoint = "internal"
    token-file = "~/.config/lwbatch/token"      # relative paths: from the profile's folder
    contact = "me@example.org"
    tier = "authenticated"
    timeout = 60
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click
import cloup

from lwbatch.config import Budget
from lwbatch.errors import UsageError

# Profile key -> whether its value is a path.
KEYS = {
    "endpoint": False,
    "host-routing": False,
    "token-file": True,
    "credentials": True,
    "token-url": False,
    "contact": False,
    "timeout": False,
    "insecure": False,
    "tier": False,
    "rate": False,
    "state-dir": True,
}


def read_profile(path: Path, command: click.Command) -> dict[str, Any]:
    """The defaults `path` gives `command`'s parameters (by parameter name)."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not TOML ({exc})") from None
    by_flag = {
        opt[2:]: param
        for param in command.params
        for opt in getattr(param, "opts", ())
        if opt.startswith("--")
    }
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        if key not in KEYS:
            raise UsageError(
                f"--config {path}: {key!r} is not a setting a profile holds; it holds "
                f"{', '.join(KEYS)}"
            )
        if isinstance(value, dict | list):
            raise UsageError(f"--config {path}: {key} must be a single value")
        if KEYS[key] and isinstance(value, str):
            value = str((path.parent / Path(value).expanduser()).resolve())
        param = by_flag.get(key)
        if param is None or param.name is None:
            continue  # a key for other commands (state-dir for plan) is left be
        try:
            param.type(value, param, None)
            if key == "rate":
                Budget.parse(str(value))
        except click.BadParameter as exc:
            raise UsageError(f"--config {path}: {key} {value!r}: {exc.message}") from None
        except UsageError as exc:
            raise UsageError(f"--config {path}: {key}: {exc}") from None
        if key in ("token-file", "credentials") and not Path(value).is_file():
            raise UsageError(f"--config {path}: {key} {value}: no such file")
        defaults[param.name] = value
    return defaults


def _load(context: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        context.default_map = {
            **(context.default_map or {}),
            **read_profile(value, context.command),
        }


CONFIG = cloup.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LWBATCH_CONFIG",
    is_eager=True,
    expose_value=False,
    callback=_load,
    help="A TOML profile of the connection, budget and contact settings (or "
    "LWBATCH_CONFIG); flags given here win over it.",
)

__all__ = ["CONFIG", "KEYS", "read_profile"]
