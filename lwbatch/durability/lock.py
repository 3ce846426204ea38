"""One run per output: an advisory lock beside it, and the sweep of what killed runs left."""

from __future__ import annotations

import fcntl
import glob
import os
import re
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
        # The holder deletes the file when it releases; a run that opened the old file
        # just before would lock a file no longer at the path, so retry until the file
        # locked is the one the path names.
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise OutputError(
                    f"cannot create its lock file ({exc.strerror})", path=self.output
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UsageError(
                    f"another lwbatch run is writing {self.output}; wait for it to finish, "
                    "or choose another output"
                ) from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            os.close(fd)
        self._fd = fd
        self._sweep()

    def _sweep(self) -> None:
        # Only the lock holder may: another run's temporary files are live. Names are
        # matched exactly (glob characters escaped, a pid between the dots), so the
        # files of `out.parquet.v2.parquet` are not this output's.
        # Temporary files and folders are `.NAME[.PART].PID.tmp` (the output, ores-json
        # parts, the hidden copy, spooled standard input); this process's own are live.
        parent, name = self.output.parent, self.output.name
        # Only these parts: `.out.parquet.v2.parquet.PID.tmp` is another output's.
        temporary = re.compile(rf"\.{re.escape(name)}(\.part[0-9]+|\.copy|\.stdin)?\.([0-9]+)\.tmp")
        retired = re.compile(rf"\.{re.escape(name)}\.lwbatch\.done-[0-9]+")
        for path in parent.glob(f".{glob.escape(name)}.*"):
            found = temporary.fullmatch(path.name)
            # A part's name is also what output `NAME.copy` (or .stdin, .partN) calls its
            # own temporary file, under its own lock: those go only once their process
            # is gone.
            if (
                found
                and int(found.group(2)) != os.getpid()
                and not (found.group(1) and _alive(int(found.group(2))))
            ):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            elif retired.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                self.path.unlink(missing_ok=True)
            finally:
                os.close(fd)


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # another user's
    except (ProcessLookupError, OverflowError):
        return False
    return True
