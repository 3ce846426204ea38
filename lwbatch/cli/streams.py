"""Standard streams whose writes never fail the command.

A reader that went away (`lwbatch score ... 2>&1 | head -3`) makes every later write to
stderr raise BrokenPipeError: a log line would abort a run whose work is fine. Here the
first failed write points the descriptor at /dev/null, so that line and every later one,
including what the interpreter flushes at exit, are dropped, and the run goes on.
A stream closed before start (`2>&-`) is /dev/null from the start.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any, TextIO

_GONE = {errno.EPIPE, errno.EBADF, errno.ECONNRESET}


class Forgiving:
    """A text stream that drops what it cannot write (the rest passes through)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            self._drop()

    def _drop(self) -> None:
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
            self._stream.flush()  # what was buffered goes to /dev/null now
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def make_forgiving() -> None:
    """Replace sys.stdout and sys.stderr with forgiving ones (the command's process only)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            stream = open(os.devnull, "w")
        elif isinstance(stream, Forgiving):
            continue
        setattr(sys, name, Forgiving(stream))


__all__ = ["Forgiving", "make_forgiving"]
