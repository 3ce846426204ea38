"""What flows through the pipeline: revisions in, scores and merged rows out."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from lwbatch.keys import RowKey

Prediction: TypeAlias = bool | str | list[str] | float


class ErrorType(StrEnum):
    """The `error` value of a score that failed. Terminal unless said otherwise."""

    NOT_FOUND = "not_found"  # 400 "does not have any info": the revision is unknown
    DELETED = "deleted"  # 400 "Missing resource ... TextDeleted"
    MODEL_NOT_DEPLOYED = "model_not_deployed"  # 404 for the model
    UNSUPPORTED_WIKI = "unsupported_wiki"  # the model does not serve this row's wiki/language
    UNSCORABLE = "unscorable"  # 422, or a batch item the model could not score
    BAD_REQUEST = "bad_request"  # any other 4xx
    BAD_RESPONSE = "bad_response"  # 2xx whose body is not the model's answer shape
    TRANSIENT_ERROR = "transient_error"  # 5xx/timeout/connection error, retries exhausted
    RATE_LIMITED = "rate_limited"  # 429 more times than the retry policy allows
    INVALID_INPUT = "invalid_input"  # the input row has no usable rev_id; never sent


@dataclass(frozen=True, slots=True)
class Score:
    """One model's answer for one revision: a prediction or an error."""

    prediction: Prediction | None = None
    probability: dict[str, float] | None = None
    model_version: str | None = None
    error: ErrorType | None = None
    error_message: str | None = None

    @classmethod
    def failed(cls, error: ErrorType, message: str) -> Score:
        return cls(error=error, error_message=message)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Revision:
    """A revision to score. `lang` is the language code (``en``), never ``enwiki``."""

    rev_id: int
    lang: str

    @property
    def key(self) -> RowKey:
        return RowKey(self.rev_id)


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """An input row whose rev_id cannot be sent; it is reported, never dropped."""

    row: int  # 1-based data row number in the input
    rev_id: int | None  # the value, where it fits int64 (0 and negatives do)
    reason: str


@dataclass(frozen=True, slots=True)
class ScoredRow:
    """The merged output for one revision: every requested model, side by side."""

    key: RowKey | None  # None for an input row without a usable key
    scores: dict[str, Score]
    invalid: InvalidRow | None = None

    @property
    def rev_id(self) -> int | None:
        """The key's rev_id, or an invalid row's raw value where it fits int64."""
        if self.key is not None:
            return self.key.rev_id
        return self.invalid.rev_id if self.invalid is not None else None

    @property
    def row(self) -> int | None:
        """The input row number of an invalid row."""
        return self.invalid.row if self.invalid is not None else None
