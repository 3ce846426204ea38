"""lwbatch: bulk-score Wikipedia revisions against Wikimedia's Lift Wing.

The public API; everything else is internal. `tests/test_public_api.py` keeps
`__all__` sorted and importable.
"""

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
    NoModelDeployedError,
    OutputError,
    RunAborted,
    UnknownModelError,
    UnreachableError,
    UsageError,
)
from lwbatch.io.parquet_sink import ParquetSink, output_schema
from lwbatch.io.sources import Source
from lwbatch.pacing.limiter import Limiter
from lwbatch.protocol.catalog import Catalog, ModelSpec, default_catalog
from lwbatch.results import ErrorType, InvalidRow, Revision, Score, ScoredRow
from lwbatch.run import score_file, score_file_async

__all__ = [
    "AuthenticationError",
    "Budget",
    "Catalog",
    "Endpoint",
    "ErrorType",
    "IncompleteRunError",
    "InputError",
    "Interrupted",
    "InvalidRow",
    "LWBatchError",
    "Limiter",
    "ModelSpec",
    "NoModelDeployedError",
    "OutputError",
    "ParquetSink",
    "Rate",
    "RetryPolicy",
    "Revision",
    "RunAborted",
    "RunReport",
    "Score",
    "ScoredRow",
    "Scorer",
    "Source",
    "Tier",
    "Token",
    "UnknownModelError",
    "UnreachableError",
    "UsageError",
    "__version__",
    "default_catalog",
    "output_schema",
    "score_file",
    "score_file_async",
]
