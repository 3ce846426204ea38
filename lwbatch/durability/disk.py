"""The file operations a journal's writes go through, in one object: the seam where a
caller (a test) makes a disk fill up or a rename fail, without touching lwbatch's
modules. :class:`Disk` does each the ordinary, durable way."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lwbatch.durability.atomic import publish, write_atomic


class Disk:
    """How the journal appends, replaces and publishes its files. Subclass it to make
    one of them fail (a full disk, a crash between two steps)."""

    def append(self, fd: int, data: bytes) -> None:
        """Append `data` to the open file `fd` in one write(2)."""
        os.write(fd, data)

    def write_atomic(self, path: Path, data: bytes) -> None:
        """Replace `path` with `data`: the old file or the new, never a mix."""
        write_atomic(path, data)

    def publish(self, temp: Path, path: Path) -> None:
        """Make the finished `temp` durable and move it to `path` in one step."""
        publish(temp, path)

    def write_table(self, path: Path, table: pa.Table) -> None:
        """`table` as the Parquet file `path`, which appears complete or not at all."""
        temp = path.with_suffix(".tmp")
        pq.write_table(table, temp, compression="zstd")
        self.publish(temp, path)


__all__ = ["Disk"]
