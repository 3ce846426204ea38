"""Files that appear complete or not at all: write to a temporary name, fsync, rename,
fsync the directory. The one implementation every writer of lwbatch uses."""

from __future__ import annotations

import os
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """A hidden name beside `path`, unique to this process; stale ones can be swept."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: Path, path: Path) -> None:
    """Make the finished file `temp` durable and move it to `path` in one step."""
    with open(temp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`; on any error `path` is left as it was."""
    temp = temporary_name(path)
    try:
        with open(temp, "wb") as fh:
            fh.write(data)
        publish(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
