"""A follower's output: a directory of Parquet parts, and where the stream stands.

Parts are named ``date=YYYY-MM-DD/part-NNNNNN.parquet`` (the date of the part's first
event, UTC; the numbers go on across restarts) and appear by rename, complete, so that
pyarrow, DuckDB, pandas and Spark can read the directory while it grows (they skip the
hidden temporary files and ``_lwbatch_follow.json``). Each part carries in its metadata
the stream position right after its rows, so a part and its position commit together;
the position file, written after it, also moves the position past events that gave no
row. On a restart the newer of the two wins.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from lwbatch.durability.atomic import write_atomic
from lwbatch.errors import OutputError, UsageError, describe
from lwbatch.io.parquet_sink import ParquetSink
from lwbatch.io.rows import RowBuffer
from lwbatch.job import ROWS_PER_SEAL
from lwbatch.keys import KeyLayout
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.streaming.core import Batch, StreamPosition

POSITION_FILE = "_lwbatch_follow.json"
LOCK_FILE = ".lwbatch_follow.lock"  # held (flock) by the follower writing the directory
METADATA_KEY = b"lwbatch.follow"
EVENT_TIME = pa.field("event_time", pa.timestamp("ms", tz="UTC"))
WIKI_COLUMN = "wiki_db"
_PART = re.compile(r"part-(\d{6,})\.parquet")


class PartWriter:
    """Writes a follower's batches into `directory`: :meth:`add` each batch, then
    :meth:`commit` makes a part of the rows added (and stores the position). `options`
    are the command's choices that a restart must repeat (models, wikis, filters)."""

    def __init__(
        self, directory: Path, specs: Sequence[ModelSpec], options: dict[str, Any]
    ) -> None:
        self.directory = directory
        self.specs = list(specs)
        self.options = options
        self._seq = 0  # the last part's number
        self._buffer = self._new_buffer()
        self._first_ms: int | None = None
        self._position: StreamPosition | None = None
        self.parts_written = 0
        self.rows_written = 0
        self._lock: int | None = None
        self._created = False
        self._wrote = False

    def close(self) -> None:
        """Let another follower have the directory; remove it if this run made it and
        wrote nothing there (a refused or failed start leaves nothing behind)."""
        if self._lock is None:
            return
        if self._created and not self._wrote:
            shutil.rmtree(self.directory, ignore_errors=True)
        os.close(self._lock)
        self._lock = None

    def _new_buffer(self) -> RowBuffer:
        return RowBuffer(self.specs, KeyLayout(WIKI_COLUMN), [EVENT_TIME])

    @property
    def pending_rows(self) -> int:
        return len(self._buffer)

    # -- restart ---------------------------------------------------------------------
    def restore(self) -> StreamPosition | None:
        """The stored position (None for a fresh output); UsageError when the output was
        made by a follower with other options, or is not a follower's."""
        where = self.directory
        if where.exists() and not where.is_dir():
            raise UsageError(f"`output` {where}: is a file; follow writes a directory of parts")
        if where.is_dir() and not (where / POSITION_FILE).exists():
            others = [
                p.name
                for p in where.iterdir()
                if not p.name.startswith(".") and not (p.name.startswith("date=") and p.is_dir())
            ]
            if others:
                raise UsageError(
                    f"`output` {where}: holds other files ({', '.join(sorted(others)[:3])}); "
                    "give follow an empty or new directory, or one an earlier follow wrote"
                )
        self._created = not where.exists()
        try:
            where.mkdir(parents=True, exist_ok=True)
            self._lock = os.open(where / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot be created ({describe(exc)})", path=where) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            self._lock = None
            raise UsageError(
                f"`output` {where}: another lwbatch follow is writing it; stop that one first"
            ) from None
        for folder in where.glob("date=*"):
            # A part a killed run was writing: never published, safe to sweep.
            for stale in folder.glob(".part-*.tmp"):
                stale.unlink(missing_ok=True)
        parts = sorted(
            (int(m.group(1)), path)
            for path in where.glob("date=*/part-*.parquet")
            if (m := _PART.fullmatch(path.name))
        )
        stored = self._read_position_file()
        self._seq = max(parts[-1][0] if parts else 0, stored[0] if stored else 0)
        if stored is None and not parts:
            return None
        if parts and (stored is None or parts[-1][0] > stored[0]):
            stored = self._read_part(parts[-1][1])
        assert stored is not None
        _, options, position = stored
        if options != self.options:
            changed = sorted(
                k for k in set(options) | set(self.options) if options.get(k) != self.options.get(k)
            )
            raise UsageError(
                f"`output` {where}: an earlier follow wrote it with other "
                f"{', '.join(changed)}; rerun it as it was, or choose another directory"
            )
        return position

    def _read_position_file(self) -> tuple[int, dict[str, Any], StreamPosition] | None:
        path = self.directory / POSITION_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OutputError(f"cannot be read ({describe(exc)})", path=path) from None
        return _decode(data, path)

    def _read_part(self, path: Path) -> tuple[int, dict[str, Any], StreamPosition]:
        try:
            metadata = pq.ParquetFile(path).metadata.metadata or {}
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"cannot be read ({describe(exc)})", path=path) from None
        if METADATA_KEY not in metadata:
            raise UsageError(f"{path}: a part no follower wrote; move it out of the output")
        return _decode(metadata[METADATA_KEY], path)

    # -- writing -----------------------------------------------------------------------
    def add(self, batch: Batch) -> None:
        """Take the batch's rows (as Arrow, a few hundred at a time) and its position."""
        buffer = self._buffer
        for row, time_ms in batch.rows:
            if self._first_ms is None:
                self._first_ms = time_ms
            buffer.add(row)
            if buffer.pending >= ROWS_PER_SEAL:
                buffer.seal()()
        self._position = batch.position

    def commit(self) -> Path | None:
        """A new part of the rows added (if any), then the position; the part's path."""
        if self._position is None or self._position.id is None:
            return None  # nothing read yet: nothing to keep
        self._wrote = True
        part = None
        if len(self._buffer):
            table, _ = self._buffer.take()
            assert self._first_ms is not None
            self._seq += 1
            day = datetime.fromtimestamp(self._first_ms / 1000, UTC).strftime("%Y-%m-%d")
            part = self.directory / f"date={day}" / f"part-{self._seq:06d}.parquet"
            part.parent.mkdir(exist_ok=True)
            sink = ParquetSink(part)
            sink.open(table.schema)
            sink.write(table)
            sink.commit({METADATA_KEY.decode(): self._encode(self._position)})
            self.parts_written += 1
            self.rows_written += table.num_rows
            self._buffer, self._first_ms = self._new_buffer(), None
        path = self.directory / POSITION_FILE
        try:
            write_atomic(path, self._encode(self._position))
        except OSError as exc:
            raise OutputError(f"cannot be written ({describe(exc)})", path=path) from None
        return part

    def _encode(self, position: StreamPosition) -> bytes:
        return orjson.dumps(
            {
                "format": 1,
                "part": self._seq,
                "options": self.options,
                "position": orjson.loads(position.to_json()),
            }
        )


def _decode(data: bytes, path: Path) -> tuple[int, dict[str, Any], StreamPosition]:
    try:
        value = orjson.loads(data)
        position = StreamPosition.from_json(orjson.dumps(value["position"]))
        return int(value["part"]), dict(value["options"]), position
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: not a follower's position ({exc})") from None


__all__ = ["EVENT_TIME", "METADATA_KEY", "POSITION_FILE", "WIKI_COLUMN", "PartWriter"]
