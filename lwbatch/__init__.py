"""lwbatch: bulk-score Wikipedia revisions against Wikimedia's Lift Wing.

The public face: the entry points, the settings values they take, the results they
give, the errors users catch (the others are in :mod:`lwbatch.errors`) and the seams a
caller may fill. Implementations stay importable from their subpackages
(``lwbatch.pacing.limiter.BudgetLimiter``, ``lwbatch.io.sources.ParquetSource``, ...).
`tests/test_public_api.py` keeps `__all__` sorted, importable and at most 40 names.

Names are imported on first use (PEP 562): ``import lwbatch`` loads no pyarrow, httpx
or aiohttp, so the command line can install its signal handlers before those heavy
imports begin, and a script pays only for what it uses.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import TYPE_CHECKING, Any

from lwbatch._version import __version__


class _Package(types.ModuleType):
    """`lwbatch.wikis` is the function lwbatch 0.1 had there, although a submodule has
    the same name: the import system binds a submodule to its package's attribute when
    it is first imported, and here that binding takes the function instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "wikis" and isinstance(value, types.ModuleType):
            value = value.wikis
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:
    from lwbatch.config import Budget, Endpoint, Rate, RetryPolicy, Tier, Token
    from lwbatch.engine.scorer import Scorer
    from lwbatch.engine.stats import RunReport
    from lwbatch.errors import (
        AuthenticationError,
        IncompleteRunError,
        InputError,
        Interrupted,
        LWBatchError,
        OutputError,
        RunAborted,
        UsageError,
    )
    from lwbatch.keys import RowKey
    from lwbatch.oauth import Credentials
    from lwbatch.plan import Plan
    from lwbatch.results import ErrorType, InvalidRow, Revision, Score, ScoredRow
    from lwbatch.run import plan_file, score_file, score_file_async
    from lwbatch.seams import Journal, Limiter, ScoreCache, Sink, Source
    from lwbatch.settings import Connection, Files, Hooks, Pacing
    from lwbatch.streaming.session import follow as follow
    from lwbatch.tables import flatten, score, score_async
    from lwbatch.wikis import wikis as wikis

# Each public name -> the module it lives in.
_HOMES = {
    **dict.fromkeys(["Budget", "Endpoint", "Rate", "RetryPolicy", "Tier", "Token"], "config"),
    "Scorer": "engine.scorer",
    "follow": "streaming.session",
    "RunReport": "engine.stats",
    **dict.fromkeys(
        [
            "AuthenticationError",
            "IncompleteRunError",
            "InputError",
            "Interrupted",
            "LWBatchError",
            "OutputError",
            "RunAborted",
            "UsageError",
        ],
        "errors",
    ),
    "RowKey": "keys",
    "Credentials": "oauth",
    "Plan": "plan",
    **dict.fromkeys(["ErrorType", "InvalidRow", "Revision", "Score", "ScoredRow"], "results"),
    **dict.fromkeys(["plan_file", "score_file", "score_file_async"], "run"),
    **dict.fromkeys(["Journal", "Limiter", "ScoreCache", "Sink", "Source"], "seams"),
    **dict.fromkeys(["Connection", "Files", "Hooks", "Pacing"], "settings"),
    **dict.fromkeys(["flatten", "score", "score_async"], "tables"),
}

__all__ = [
    "AuthenticationError",
    "Budget",
    "Connection",
    "Credentials",
    "Endpoint",
    "ErrorType",
    "Files",
    "Hooks",
    "IncompleteRunError",
    "InputError",
    "Interrupted",
    "InvalidRow",
    "Journal",
    "LWBatchError",
    "Limiter",
    "OutputError",
    "Pacing",
    "Plan",
    "Rate",
    "RetryPolicy",
    "Revision",
    "RowKey",
    "RunAborted",
    "RunReport",
    "Score",
    "ScoreCache",
    "ScoredRow",
    "Scorer",
    "Sink",
    "Source",
    "Tier",
    "Token",
    "UsageError",
    "__version__",
    "flatten",
    "plan_file",
    "score",
    "score_async",
    "score_file",
    "score_file_async",
]

# Names lwbatch 0.1 had at the top level -> the module they live in; they still resolve
# here, with a DeprecationWarning, for one release.
MOVED = {
    "BudgetChoice": "lwbatch.tokens",
    "BudgetLimiter": "lwbatch.pacing.limiter",
    "Catalog": "lwbatch.protocol.catalog",
    "CsvSource": "lwbatch.io.sources",
    "FileJournal": "lwbatch.durability.journal",
    "KeyLayout": "lwbatch.keys",
    "ModelSpec": "lwbatch.protocol.catalog",
    "NoModelDeployedError": "lwbatch.errors",
    "ParquetSink": "lwbatch.io.parquet_sink",
    "ParquetSource": "lwbatch.io.sources",
    "ReadableSink": "lwbatch.seams",
    "TokenClaims": "lwbatch.tokens",
    "UnknownModelError": "lwbatch.errors",
    "UnreachableError": "lwbatch.errors",
    "Wiki": "lwbatch.wikis",
    "choose_budget": "lwbatch.tokens",
    "default_catalog": "lwbatch.protocol.catalog",
    "open_sink": "lwbatch.io.sinks",
    "open_source": "lwbatch.io.inputs",
    "output_schema": "lwbatch.io.rows",
}


def __getattr__(name: str) -> Any:
    if name == "wikis":
        importlib.import_module("lwbatch.wikis")  # binds the function (see _Package)
        return globals()["wikis"]
    home = _HOMES.get(name)
    if home is not None:
        value = getattr(importlib.import_module(f"lwbatch.{home}"), name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    module = MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'lwbatch' has no attribute {name!r}")
    warnings.warn(
        f"lwbatch.{name} is now {module}.{name}: import it from there (the top-level name "
        "goes in the next release)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
