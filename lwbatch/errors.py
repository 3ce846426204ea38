"""The one exception tree of lwbatch.

    LWBatchError                 anything lwbatch raises on purpose
    ├── UsageError               bad option or argument (exit 2)
    │   └── UnknownModelError    a model name that fits no catalogue family
    ├── InputError               an input file that cannot be read as revisions (exit 2)
    ├── OutputError              the output cannot be written or committed (exit 1)
    ├── RunAborted               the service refused the whole run (exit 1)
    │   ├── AuthenticationError  401: the token is bad or expired
    │   └── NoModelDeployedError every requested model answered 404
    └── Interrupted              SIGINT/SIGTERM: progress saved (exit 130/143)

A failure of one (model, revision) is never an exception: it becomes an `error`
value in that revision's row. Messages say what happened and what to do next.
"""

from __future__ import annotations

from pathlib import Path


class LWBatchError(Exception):
    """Base of every error lwbatch raises on purpose."""

    exit_code = 1


class UsageError(LWBatchError):
    """An option or argument is invalid."""

    exit_code = 2


class UnknownModelError(UsageError):
    def __init__(self, name: str, *, known: str) -> None:
        super().__init__(
            f"unknown model {name!r}: it fits no Lift Wing model family ({known}); "
            "see configs/models.toml"
        )
        self.name = name


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
    """The service refused the whole run; continuing would waste requests."""


class AuthenticationError(RunAborted):
    def __init__(self, *, url: str) -> None:
        super().__init__(
            f"401 Unauthorized from {url}: the token in LIFTWING_TOKEN or --token-file is "
            "invalid or expired; create a new one, or run without a token (anonymous tier)"
        )


class NoModelDeployedError(RunAborted):
    def __init__(self, *, models: list[str]) -> None:
        super().__init__(
            "every requested model answered 404 (not deployed): "
            + ", ".join(models)
            + "; check the model names and the wikis they are deployed on"
        )
        self.models = models


class Interrupted(LWBatchError):
    """The run was stopped by a signal after saving its progress."""

    def __init__(self, message: str, *, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number
