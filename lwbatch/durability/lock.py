"""One run per output: an advisory lock beside it, and the sweep of what killed runs left."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from lwbatch.errors import OutputError, UsageError


class OutputLock:
    """Held while a run writes `output`; a second run is refused, not interleaved."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.with_name(f".{output.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise OutputError(
                f"cannot create its lock file ({exc.strerror})", path=self.output
            ) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise UsageError(
                f"another lwbatch run is writing {self.output}; wait for it to finish, "
                "or choose another output"
            ) from None
        self._sweep()

    def _sweep(self) -> None:
        # Only the lock holder may: another run's temporary files are live.
        parent, name = self.output.parent, self.output.name
        for stale in parent.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
        for retired in parent.glob(f".{name}.lwbatch.done-*"):
            shutil.rmtree(retired, ignore_errors=True)

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
