"""The keywords of lwbatch 0.1, mapped onto the settings values for one more release.

lwbatch 0.1 took every setting as a keyword of its own (`score_file(..., endpoint=...,
token=..., concurrency=..., journal=..., progress=...)`). Since 0.2 they are grouped in
:class:`~lwbatch.Connection`, :class:`~lwbatch.Pacing`, :class:`~lwbatch.Files` and
:class:`~lwbatch.Hooks`; the public functions still take the old keywords, with a
:class:`DeprecationWarning` that names the value each goes to, until the next release.

    endpoint token credentials contact timeout verify catalog transport -> Connection
    limiter concurrency retry gc_control linger max_open clock sleep state_dir
    share_budget (as `share`)                                         -> Pacing
    journal restart retry_failed cache format keep_columns batch_rows
    input_format                                                      -> Files
    progress on_start on_send on_answer                               -> Hooks
    budget -> rate; id_col -> id_column; wiki_col -> wiki_column (Spark); lang_col: a
    column named `lang` is read without it (Spark, as for files)

This module is the only place that knows the old names; the functions it wraps are
exempt from the size rule on parameters (tests/test_sizes.py) only through it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar, cast

from lwbatch.errors import UsageError
from lwbatch.settings import Connection, Files, Hooks, Pacing

F = TypeVar("F", bound=Callable[..., Any])

_VALUES: dict[str, tuple[str, type[Any], tuple[str, ...]]] = {
    "connection": (
        "Connection",
        Connection,
        (
            "endpoint",
            "token",
            "credentials",
            "contact",
            "timeout",
            "verify",
            "catalog",
            "transport",
        ),
    ),
    "pacing": (
        "Pacing",
        Pacing,
        (
            "limiter",
            "concurrency",
            "retry",
            "gc_control",
            "linger",
            "max_open",
            "clock",
            "sleep",
            "state_dir",
            "share",
        ),
    ),
    "files": (
        "Files",
        Files,
        (
            "journal",
            "restart",
            "retry_failed",
            "cache",
            "format",
            "keep_columns",
            "batch_rows",
            "input_format",
        ),
    ),
    "hooks": ("Hooks", Hooks, ("progress", "on_start", "on_send", "on_answer")),
}
# Old keyword -> its name now (in a value, or a keyword of its own).
_RENAMED = {
    "budget": "rate",
    "share_budget": "share",
    "id_col": "id_column",
    "wiki_col": "wiki_column",
}
_OWNER = {field: value for value, (_, _, fields) in _VALUES.items() for field in fields}


def translate(function: str, kwargs: dict[str, Any], *, values: tuple[str, ...]) -> dict[str, Any]:
    """`kwargs` with every old keyword moved into the value it belongs to now (of those
    `function` takes: `values`); one DeprecationWarning naming them all."""
    moved: dict[str, dict[str, Any]] = {}
    said: list[str] = []
    if "lang_col" in kwargs:
        # Spark's column of language codes: a `lang` column is now read without it.
        named = kwargs.pop("lang_col")
        if named not in (None, "lang"):
            raise UsageError(
                f"`lang_col` {named!r}: name the column of language codes `lang` (it is "
                "read without being named), or give database names in `wiki_column`"
            )
        said.append("`lang_col=` is not needed: a `lang` column is read by itself")
    for old in list(kwargs):
        new = _RENAMED.get(old, old)
        owner = _OWNER.get(new)
        if old == new and owner is None:
            continue
        if owner is None or owner in values:
            value = kwargs.pop(old)
            if owner is None:
                if new in kwargs:
                    raise UsageError(f"give `{new}` (which `{old}` was), not both")
                kwargs[new] = value
                said.append(f"`{old}=` is `{new}=`")
            else:
                moved.setdefault(owner, {})[new] = value
                said.append(f"`{old}=` goes in {_VALUES[owner][0]}({new}=...)")
    for owner, fields in moved.items():
        name, kind, _ = _VALUES[owner]
        given = kwargs.get(owner)
        if given is not None:
            default = kind()
            for field in fields:
                if getattr(given, field) != getattr(default, field):
                    raise UsageError(
                        f"give `{field}` once: in the {name} or as a keyword, not both"
                    )
        kwargs[owner] = replace(given, **fields) if given is not None else kind(**fields)
    if said:
        warnings.warn(
            f"{function}: " + "; ".join(said) + " (the old keywords go in the next release)",
            DeprecationWarning,
            stacklevel=3,
        )
    return kwargs


def accepts_old_keywords(*values: str) -> Callable[[F], F]:
    """Let a public function take lwbatch 0.1's keywords for its `values`, with a
    warning."""

    def wrap(function: F) -> F:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            return function(*args, **translate(named, kwargs, values=values))

        named = function.__qualname__.removesuffix(".__init__")

        return cast(F, call)

    return wrap


__all__ = ["accepts_old_keywords", "translate"]
