"""The one exception tree of lwbatch.

    LWBatchError                 anything lwbatch raises on purpose
    ├── UsageError               bad option or argument (exit 2)
    │   └── UnknownModelError    a model name that fits no catalogue family
    ├── InputError               an input file that cannot be read as revisions (exit 2)
    ├── OutputError              the output cannot be written or committed (exit 1)
    ├── RunAborted               the run cannot go on (exit 1)
    │   ├── AuthenticationError  401: the token is bad or expired, or one is needed
    │   ├── NoModelDeployedError every requested model answered 404
    │   ├── UnreachableError     the endpoint never answered: refused, DNS, TLS
    │   └── IncompleteRunError   rows admitted but not written (a bug, never silent)
    └── Interrupted              stopped on request: progress saved (exit 130/143)

A failure of one (model, revision) is never an exception: it becomes an `error`
value in that revision's row. Messages say what happened and what to do next, in
library terms: a setting is named as the parameter that takes it, in backticks
(`rate`, `restart=True`); the CLI turns those into its flags (lwbatch/cli/messages.py).
"""

from __future__ import annotations

from pathlib import Path


def describe(exc: BaseException) -> str:
    """An OS or Arrow error as a short reason for a one-line message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class LWBatchError(Exception):
    """Base of every error lwbatch raises on purpose."""

    exit_code = 1


class UsageError(LWBatchError):
    """An option or argument is invalid."""

    exit_code = 2


class RestartNeeded(UsageError):
    """The output or its journal belongs to another run (another input, model list or
    format): only `restart=True` gets past it."""


class UnknownModelError(UsageError):
    def __init__(self, name: str, *, known: str, close: str | None = None) -> None:
        guess = f" (did you mean {close!r}?)" if close else ""
        super().__init__(
            f"unknown model {name!r}{guess}; Lift Wing models are {known} (WIKI is a "
            "database name such as enwiki, or {wiki} for each row's own wiki)"
        )
        self.name = name
        self.close = close


class InputError(LWBatchError):
    """An input file cannot be read as revisions."""

    exit_code = 2

    def __init__(self, message: str, *, path: Path | str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


class OutputError(LWBatchError):
    """The output file cannot be written or committed."""

    def __init__(self, message: str, *, path: Path | str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


class RunAborted(LWBatchError):
    """The run cannot go on; continuing would waste requests or lose rows."""


class SparkJobError(RunAborted):
    """The Spark job failed: `cause` is what failed, in one line (an error of a task's
    scoring keeps its own exit code)."""

    def __init__(self, cause: str, *, exit_code: int = 1) -> None:
        super().__init__(cause)
        self.exit_code = exit_code


class AuthenticationError(RunAborted):
    """401. `token_sent`: the request carried a token; `bearer_challenge`: the answer's
    WWW-Authenticate asked for a bearer token."""

    def __init__(
        self,
        *,
        url: str,
        token_sent: bool = True,
        bearer_challenge: bool = False,
        refreshed: bool = False,
    ) -> None:
        if refreshed:
            reason = (
                "a token just issued by the OAuth2 token endpoint was refused too; check "
                "that the client in `credentials` may use this API"
            )
        elif token_sent:
            reason = (
                "the token is invalid or expired; create a new one and put it in `token`, "
                "or run without one (anonymous tier)"
            )
        elif bearer_challenge:
            reason = (
                "anonymous access is disabled on this endpoint and a token is needed; "
                "create one and put it in `token`"
            )
        else:
            reason = (
                "the endpoint refuses requests without credentials; "
                "if it takes a bearer token, put one in `token`"
            )
        super().__init__(f"401 Unauthorized from {url}: {reason}")


class NoModelDeployedError(RunAborted):
    def __init__(self, *, models: list[str]) -> None:
        super().__init__(
            "every requested model answered 404 (not deployed): "
            + ", ".join(models)
            + "; check the model names and the wikis they are deployed on"
        )
        self.models = models


class UnreachableError(RunAborted):
    """No request ever got an answer and every attempt failed to connect."""

    def __init__(self, *, url: str, reason: str, attempts: int) -> None:
        super().__init__(
            f"cannot reach {url}: {reason} ({attempts} attempt{'s' if attempts != 1 else ''} "
            "in a row, none answered); "
            "check the endpoint and the network"
        )
        self.url = url
        self.reason = reason
        self.attempts = attempts


class IncompleteRunError(RunAborted):
    """The rows written differ from the keys the run took in; the work is kept.

    Never expected: it guards the invariant that every distinct input key ends in
    exactly one output row, so that a defect costs a rerun, not a silent hole.
    """

    def __init__(self, *, written: int, expected: int, saved_in: Path | None = None) -> None:
        missing = expected - written
        what = (
            f"{missing:,} of {expected:,} rows are missing from the output"
            if missing > 0
            else f"the output would hold {-missing:,} rows more than the {expected:,} expected"
        )
        if saved_in is None:
            where = ""
        elif missing > 0:
            where = (
                f"; progress is saved in {saved_in}: run again with the same input and "
                "output to complete it"
            )
        else:
            where = f"; the journal {saved_in} is kept for inspection; restart the run afresh"
        super().__init__(what + where)
        self.written = written
        self.expected = expected
        self.missing = missing
        self.saved_in = saved_in


class Interrupted(LWBatchError):
    """The run was stopped (:meth:`lwbatch.Scorer.stop`) after saving its progress."""

    exit_code = 130

    def __init__(self, *, saved_in: Path | None) -> None:
        where = (
            f"progress is saved in {saved_in}: run again with the same input and output to resume"
            if saved_in is not None
            else "no progress was kept (no journal)"
        )
        super().__init__(f"the run was stopped; {where}")
        self.saved_in = saved_in

    @classmethod
    def with_message(cls, message: str, original: Interrupted) -> Interrupted:
        """The same stop, told another way (the CLI names the signal)."""
        exc = cls(saved_in=original.saved_in)
        exc.args = (message,)
        exc.exit_code = original.exit_code
        return exc


def primary_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to show from a task group: ours first, then the first other one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for leaf in leaves:
        if isinstance(leaf, LWBatchError):
            return leaf
    return leaves[0] if len(leaves) == 1 else group
