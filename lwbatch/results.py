"""What flows through the pipeline: revisions in, scores and merged rows out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

from lwbatch.keys import RowKey
from lwbatch.wikis import Wiki, wikis

Prediction: TypeAlias = bool | str | list[str] | float


class ErrorType(StrEnum):
    """The `error` value of a score that failed. Terminal unless said otherwise; which
    answer is which is lwbatch/protocol/answers.py's business."""

    NOT_FOUND = "not_found"  # the server cannot find or fetch the revision (400, 422, 500)
    DELETED = "deleted"  # its text, comment or user was deleted or suppressed
    MODEL_NOT_DEPLOYED = "model_not_deployed"  # 404 for the model
    UNSUPPORTED_WIKI = "unsupported_wiki"  # the model does not serve this row's wiki/language
    # The revision exists but the model cannot score it: not wikitext, no text, its
    # parent missing, a knowledge_integrity code other than a missing revision, a row
    # without what the model needs.
    UNSCORABLE = "unscorable"
    BAD_REQUEST = "bad_request"  # any other 4xx
    BAD_RESPONSE = "bad_response"  # 2xx whose body is not the model's answer shape
    TRANSIENT_ERROR = "transient_error"  # 5xx/timeout/connection error, retries exhausted
    # The (model, wiki) failed the same way for several revisions in a row with nothing
    # scored in between (a server-side fault, not a fact about the revision): the rest
    # of it is not sent this run, and a rerun asks again.
    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"  # 429 more times than the retry policy allows
    INVALID_INPUT = "invalid_input"  # the row has no usable rev_id or wiki; never sent


@dataclass(frozen=True, slots=True)
class Score:
    """One model's answer for one revision: a prediction or an error."""

    prediction: Prediction | None = None
    probability: dict[str, float] | None = None
    model_version: str | None = None
    error: ErrorType | None = None
    error_message: str | None = None
    # How this run got the answer: the last request's latency, and the requests it took
    # (retries included). None where no request was made (cached, resumed, refused up
    # front). Not part of the answer: two equal answers may have taken different paths.
    latency_ms: float | None = field(default=None, compare=False)
    attempts: int | None = field(default=None, compare=False)
    # False for a final answer that a score cache must not keep: read from a body whose
    # meaning is a guess (a hidden user), final for this run only.
    cacheable: bool = field(default=True, compare=False)

    @classmethod
    def failed(cls, error: ErrorType, message: str, *, cacheable: bool = True) -> Score:
        return cls(error=error, error_message=message, cacheable=cacheable)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Revision:
    """A revision to score.

    `wiki` is the revision's wiki (``wikis().from_dbname("dewiki")``). The key is
    (`key_wiki`, rev_id): by default the wiki's database name; a source passes the
    value its wiki column writes (``de`` for a ``lang`` column), or ``""`` when the
    input names no wiki (every row of one wiki). `page_id` or `page_title` is needed by
    the page beside the revision (outlink-topic-model).
    """

    rev_id: int
    wiki: Wiki
    key_wiki: str | None = None
    page_id: int | None = None
    kept: tuple[Any, ...] = ()  # the values of the input columns carried to the output
    page_title: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.wiki, Wiki):
            raise TypeError(
                f"Revision.wiki must be a Wiki, not {self.wiki!r}: "
                "use lwbatch.wikis().from_dbname(...) or .from_lang(...)"
            )

    @classmethod
    def in_lang(cls, rev_id: int, lang: str = "en", *, keyed: bool = False) -> Revision:
        """A Wikipedia revision by language code; `keyed`: the key holds the language,
        else the revision is of the input's one wiki (its key has no wiki)."""
        wiki = wikis().from_lang(lang)
        return cls(rev_id, wiki, wiki.lang if keyed else "")

    @property
    def key(self) -> RowKey:
        wiki = self.wiki.dbname if self.key_wiki is None else self.key_wiki
        return RowKey(wiki, self.rev_id)


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """An input row that cannot be sent (no usable rev_id or wiki); reported, never dropped."""

    row: int | None  # 1-based data row number in the input; None where unknown (Spark)
    rev_id: int | None  # the value, where it fits int64 (0 and negatives do)
    reason: str
    wiki: str | None = None  # the raw wiki value, when the input has a wiki column
    kept: tuple[Any, ...] = ()  # as Revision.kept

    def __str__(self) -> str:
        return self.reason if self.row is None else f"row {self.row}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ScoredRow:
    """The merged output for one revision: every requested model, side by side."""

    key: RowKey | None  # None for an input row without a usable key
    scores: dict[str, Score]
    invalid: InvalidRow | None = None
    kept: tuple[Any, ...] = ()  # the input columns carried to the output

    @property
    def rev_id(self) -> int | None:
        """The key's rev_id, or an invalid row's raw value where it fits int64."""
        if self.key is not None:
            return self.key.rev_id
        return self.invalid.rev_id if self.invalid is not None else None

    @property
    def wiki(self) -> str | None:
        """The key's wiki value, or an invalid row's raw one."""
        if self.key is not None:
            return self.key.wiki
        return self.invalid.wiki if self.invalid is not None else None

    @property
    def row(self) -> int | None:
        """The input row number of an invalid row."""
        return self.invalid.row if self.invalid is not None else None
