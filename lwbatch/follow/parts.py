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

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from lwbatch.durability.atomic import write_atomic
from lwbatch.errors import OutputError, UsageError, describe
from lwbatch.follow.core import Batch, StreamPosition
from lwbatch.io.parquet_sink import ParquetSink
from lwbatch.io.rows import RowBuffer
from lwbatch.keys import KeyLayout
from lwbatch.protocol.catalog import ModelSpec

POSITION_FILE = "_lwbatch_follow.json"
METADATA_KEY = b"lwbatch.follow"
EVENT_TIME = pa.field("event_time", pa.timestamp("ms", tz="UTC"))
WIKI_COLUMN = "wiki_db"
_PART = re.compile(r"part-(\d{6,})\.parquet")


class PartWriter:
    """Writes a follower's batches into `directory`; `options` are the command's choices
    that a restart must repeat (models, wikis, filters, stream)."""

    def __init__(
        self, directory: Path, specs: Sequence[ModelSpec], options: dict[str, Any]
    ) -> None:
        self.directory = directory
        self.specs = list(specs)
        self.options = options
        self._seq = 0  # the last part's number
        self.parts_written = 0
        self.rows_written = 0

    def _buffer(self) -> RowBuffer:
        return RowBuffer(self.specs, KeyLayout(WIKI_COLUMN), [EVENT_TIME])

    # -- restart ---------------------------------------------------------------------
    def restore(self) -> StreamPosition | None:
        """The stored position (None for a fresh output); UsageError when the output was
        made by a follower with other options, or is not a follower's."""
        where = self.directory
        if where.exists() and not where.is_dir():
            raise UsageError(f"--output {where}: is a file; follow writes a directory of parts")
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot be created ({describe(exc)})", path=where) from None
        parts = sorted(
            (int(m.group(1)), path)
            for path in where.glob("date=*/part-*.parquet")
            if (m := _PART.fullmatch(path.name))
        )
        self._seq = parts[-1][0] if parts else 0
        stored = self._read_position_file()
        if stored is None and not parts:
            if any(p for p in where.iterdir() if not p.name.startswith(".")):
                raise UsageError(
                    f"--output {where}: holds other files; give follow an empty or new "
                    "directory, or one an earlier follow wrote"
                )
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
                f"--output {where}: an earlier follow wrote it with other "
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
    def write(self, batch: Batch) -> Path | None:
        """The batch's rows as a new part (if any), then its position; the part's path."""
        part = None
        if batch.rows:
            buffer = self._buffer()
            for row, _ in batch.rows:
                buffer.add(row)
            table, _ = buffer.take()
            self._seq += 1
            day = batch.rows[0][1].strftime("%Y-%m-%d")
            part = self.directory / f"date={day}" / f"part-{self._seq:06d}.parquet"
            part.parent.mkdir(exist_ok=True)
            sink = ParquetSink(part)
            sink.open(table.schema)
            sink.write(table)
            sink.commit({METADATA_KEY.decode(): self._encode(batch.position)})
            self.parts_written += 1
            self.rows_written += table.num_rows
        path = self.directory / POSITION_FILE
        try:
            write_atomic(path, self._encode(batch.position))
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
