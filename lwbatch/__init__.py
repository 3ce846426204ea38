"""lwbatch: bulk-score Wikipedia revisions against Wikimedia's Lift Wing.

The public API; everything else is internal. `tests/test_public_api.py` keeps
`__all__` sorted and importable.
"""

from lwbatch._version import __version__
from lwbatch.config import Budget, Endpoint, Rate, RetryPolicy, Tier, Token
from lwbatch.durability.journal import FileJournal
from lwbatch.engine.scorer import Scorer
from lwbatch.engine.stats import RunReport
from lwbatch.errors import (
    AuthenticationError,
    IncompleteRunError,
    InputError,
    Interrupted,
    LWBatchError,
    NoModelDeployedError,
    OutputError,
    RunAborted,
    UnknownModelError,
    UnreachableError,
    UsageError,
)
from lwbatch.io.inputs import open_source
from lwbatch.io.parquet_sink import ParquetSink
from lwbatch.io.rows import output_schema
from lwbatch.io.sinks import open_sink
from lwbatch.io.sources import CsvSource, ParquetSource
from lwbatch.keys import KeyLayout, RowKey
from lwbatch.pacing.limiter import BudgetLimiter
from lwbatch.plan import Plan
from lwbatch.protocol.catalog import Catalog, ModelSpec, default_catalog
from lwbatch.results import ErrorType, InvalidRow, Revision, Score, ScoredRow
from lwbatch.run import plan_file, score_file, score_file_async
from lwbatch.seams import Journal, Limiter, ReadableSink, Sink, Source
from lwbatch.settings import Connection, Files, Hooks, Pacing
from lwbatch.tables import flatten, score, score_async
from lwbatch.tokens import BudgetChoice, TokenClaims, choose_budget
from lwbatch.wikis import Wiki, wikis

__all__ = [
    "AuthenticationError",
    "Budget",
    "BudgetChoice",
    "BudgetLimiter",
    "Catalog",
    "Connection",
    "CsvSource",
    "Endpoint",
    "ErrorType",
    "FileJournal",
    "Files",
    "Hooks",
    "IncompleteRunError",
    "InputError",
    "Interrupted",
    "InvalidRow",
    "Journal",
    "KeyLayout",
    "LWBatchError",
    "Limiter",
    "ModelSpec",
    "NoModelDeployedError",
    "OutputError",
    "Pacing",
    "ParquetSink",
    "ParquetSource",
    "Plan",
    "Rate",
    "ReadableSink",
    "RetryPolicy",
    "Revision",
    "RowKey",
    "RunAborted",
    "RunReport",
    "Score",
    "ScoredRow",
    "Scorer",
    "Sink",
    "Source",
    "Tier",
    "Token",
    "TokenClaims",
    "UnknownModelError",
    "UnreachableError",
    "UsageError",
    "Wiki",
    "__version__",
    "choose_budget",
    "default_catalog",
    "flatten",
    "open_sink",
    "open_source",
    "output_schema",
    "plan_file",
    "score",
    "score_async",
    "score_file",
    "score_file_async",
    "wikis",
]
