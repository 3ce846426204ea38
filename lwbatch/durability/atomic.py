"""Files that appear complete or not at all: write to a temporary name, fsync, rename,
fsync the directory. The one implementation every writer of lwbatch uses."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


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


def write_parquet_atomic(path: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """Write `batches` as one Parquet file at `path`, atomically; the number of rows."""
    temp = temporary_name(path)
    rows = 0
    try:
        with pq.ParquetWriter(temp, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        publish(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return rows
