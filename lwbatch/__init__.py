"""lwbatch: bulk-score Wikipedia revisions against Wikimedia's Lift Wing.

The public face: the entry points, the settings values they take, the results they
give, the errors users catch (the others are in :mod:`lwbatch.errors`) and the seams a
caller may fill. Implementations stay importable from their subpackages
(``lwbatch.pacing.limiter.BudgetLimiter``, ``lwbatch.io.sources.ParquetSource``, ...).
`tests/test_public_api.py` keeps `__all__` sorted, importable and at most 40 names.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from lwbatch._version import __version__
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
from lwbatch.tables import flatten, score, score_async

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
# `lwbatch.wikis` is also a submodule, which importing it would put in this name's
# place: the function stays bound here (out of __all__), as lwbatch 0.1 had it.
from lwbatch.wikis import wikis as wikis  # noqa: E402


def __getattr__(name: str) -> Any:
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
