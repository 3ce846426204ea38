"""Merged rows -> one Parquet file, committed atomically (the default :class:`Sink`).

Row groups go to a hidden temporary file beside the output as they arrive; only
:meth:`ParquetSink.commit` (fsync, rename, fsync of the directory) makes the output
appear, so a crash or an aborted run never leaves a file that looks complete.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lwbatch.durability.atomic import publish, temporary_name
from lwbatch.errors import OutputError, describe
from lwbatch.io.destination import check_destination


class ParquetSink:
    """Writes each table it is given as row groups of one zstd-compressed Parquet file."""

    def __init__(self, path: Path | str, *, temp: Path | None = None) -> None:
        self.path = Path(path)
        self._temp = temp or temporary_name(self.path)
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._rows = 0

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def rows_written(self) -> int:
        return self._rows

    def open(self, schema: pa.Schema) -> None:
        check_destination(self.path, "scores.parquet")
        self._schema = schema
        self._rows = 0

    def write(self, rows: pa.Table) -> None:
        assert self._schema is not None, "open() the sink before writing"
        try:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._temp, self._schema, compression="zstd")
            rows = rows.select(self._schema.names)
            if not rows.schema.equals(self._schema):
                # Only where it does something: a cast imports pyarrow.compute (~9 MB).
                rows = rows.cast(self._schema)
            self._writer.write_table(rows, row_group_size=max(rows.num_rows, 1))
        except (OSError, pa.ArrowException) as exc:
            self.abort()
            raise OutputError(f"cannot be written ({describe(exc)})", path=self.path) from None
        self._rows += rows.num_rows

    def commit(self, metadata: Mapping[str, bytes]) -> None:
        assert self._schema is not None, "open() the sink before committing"
        try:
            if self._writer is None:  # no rows: still a valid, empty file
                self._writer = pq.ParquetWriter(self._temp, self._schema, compression="zstd")
            if metadata:
                self._writer.add_key_value_metadata(dict(metadata))
            self._writer.close()
            self._writer = None
            publish(self._temp, self.path)
        except (OSError, pa.ArrowException) as exc:
            self.abort()
            raise OutputError(f"cannot be committed ({describe(exc)})", path=self.path) from None

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, pa.ArrowException):
                pass
            self._writer = None
        self._temp.unlink(missing_ok=True)

    def read_back(self) -> tuple[dict[str, bytes], Iterator[pa.Table]] | None:
        if not self.path.is_file():
            return None
        try:
            pf = pq.ParquetFile(self.path)
            raw = pf.metadata.metadata or {}
        except (OSError, pa.ArrowException):
            return {}, iter(())
        metadata = {k.decode(): v for k, v in raw.items() if k != b"ARROW:schema"}

        def tables() -> Iterator[pa.Table]:
            for group in range(pf.num_row_groups):
                yield pf.read_row_group(group)

        return metadata, tables()

    def __repr__(self) -> str:
        return f"<ParquetSink {self.path}>"
