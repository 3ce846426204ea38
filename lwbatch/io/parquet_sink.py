"""Merged rows -> a Parquet file, written in row groups and committed atomically.

Without a journal, row groups go to a hidden temporary file beside the output. With
one (the CLI's case), each row group becomes a durable journal segment, and commit
folds the segments into the temporary file. Either way only :meth:`commit` (fsync,
rename, fsync of the directory) makes the output appear, so a crash or an aborted run
never leaves a file that looks complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lwbatch.durability.journal import Journal
from lwbatch.errors import IncompleteRunError, OutputError
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import Score, ScoredRow

OpenAnswers = Callable[[], Iterable[tuple[str, int, Score]]]

DEFAULT_ROW_GROUP = 16_384

_PREDICTION_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "string": pa.string(),
    "list": pa.list_(pa.string()),
    "double": pa.float64(),
}


def score_type(spec: ModelSpec) -> pa.StructType:
    """The struct of one model's column."""
    return pa.struct(
        [
            pa.field("prediction", _PREDICTION_TYPES[spec.family.prediction]),
            pa.field("probability", pa.map_(pa.string(), pa.float64())),
            pa.field("model_version", pa.string()),
            pa.field("error", pa.string()),
            pa.field("error_message", pa.string()),
        ]
    )


def output_schema(specs: Sequence[ModelSpec]) -> pa.Schema:
    """`rev_id` int64, then one struct column per model, named exactly as the model."""
    return pa.schema(
        [pa.field("rev_id", pa.int64())] + [pa.field(s.name, score_type(s)) for s in specs]
    )


class ParquetSink:
    """Buffers merged rows column by column and writes a row group when full."""

    def __init__(
        self,
        path: Path | str,
        specs: Sequence[ModelSpec],
        *,
        row_group_size: int = DEFAULT_ROW_GROUP,
        journal: Journal | None = None,
        open_answers: OpenAnswers | None = None,
    ) -> None:
        self.path = Path(path)
        self.specs = list(specs)
        self.schema = output_schema(self.specs)
        self.row_group_size = row_group_size
        self.rows_written = 0
        self._journal = journal
        self._open_answers = open_answers or (lambda: ())
        self._temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._writer: pq.ParquetWriter | None = None
        self._opened = False
        self._reset()

    def _reset(self) -> None:
        self._rev_ids: list[int | None] = []
        self._invalid_rows: list[int] = []
        self._columns: dict[str, list[list[Any]]] = {
            s.name: [[], [], [], [], []] for s in self.specs
        }

    def open(self) -> ParquetSink:
        if not self.path.parent.is_dir():
            raise OutputError("its directory does not exist", path=self.path)
        if self.path.is_dir():
            raise OutputError(
                "is a directory; give a file name such as scores.parquet", path=self.path
            )
        if not os.access(self.path.parent, os.W_OK):
            raise OutputError("its directory is not writable", path=self.path)
        if self._journal is None:
            self._writer = self._new_writer()
        self._opened = True
        return self

    def _new_writer(self) -> pq.ParquetWriter:
        try:
            return pq.ParquetWriter(self._temp, self.schema, compression="zstd")
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"cannot be written ({_reason(exc)})", path=self.path) from None

    def __enter__(self) -> ParquetSink:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def write(self, row: ScoredRow) -> None:
        self._rev_ids.append(row.rev_id)
        if row.row is not None:
            self._invalid_rows.append(row.row)
        for name, (pred, prob, version, error, message) in self._columns.items():
            score = row.scores[name]
            pred.append(score.prediction)
            prob.append(score.probability)
            version.append(score.model_version)
            error.append(None if score.error is None else score.error.value)
            message.append(score.error_message)
        if len(self._rev_ids) >= self.row_group_size:
            self.flush()

    def _table(self) -> pa.Table:
        arrays: list[pa.Array] = [pa.array(self._rev_ids, pa.int64())]
        for spec in self.specs:
            struct_type = score_type(spec)
            children = [
                pa.array(values, struct_type.field(i).type)
                for i, values in enumerate(self._columns[spec.name])
            ]
            arrays.append(pa.StructArray.from_arrays(children, fields=list(struct_type)))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def flush(self) -> None:
        """Write the buffered rows as one row group (a journal segment, if journaled)."""
        if not self._rev_ids:
            return
        assert self._opened, "open() the sink before writing"
        table = self._table()
        try:
            if self._journal is not None:
                self._journal.commit_segment(table, self._invalid_rows, self._open_answers())
            else:
                assert self._writer is not None
                self._writer.write_table(table, row_group_size=len(self._rev_ids))
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"cannot be written ({_reason(exc)})", path=self.path) from None
        self.rows_written += len(self._rev_ids)
        self._reset()

    def commit(self, *, expected_rows: int | None = None) -> None:
        """Write what is buffered, make it durable and move it into place.

        With `expected_rows`, a file holding any other number of rows is never moved
        into place: :class:`IncompleteRunError` is raised and the journal is kept.
        """
        self.flush()
        if not self._opened:
            return
        try:
            if self._journal is not None:
                self.rows_written = self._journal.fold(self.schema, self._temp)
            elif self._writer is not None:
                self._writer.close()
                self._writer = None
            if expected_rows is not None and self.rows_written != expected_rows:
                self._temp.unlink(missing_ok=True)
                raise IncompleteRunError(written=self.rows_written, expected=expected_rows)
            with open(self._temp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self._temp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except (OSError, pa.ArrowException) as exc:
            self.abort()
            raise OutputError(f"cannot be committed ({_reason(exc)})", path=self.path) from None
        self._opened = False
        if self._journal is not None:
            self._journal.remove()

    def suspend(self) -> None:
        """Stop without committing: make the journal durable so a rerun resumes."""
        if self._journal is None:
            self.abort()
            return
        self.flush()
        self._journal.close()
        self._opened = False

    def abort(self) -> None:
        """Drop the temporary file; the output path is left as it was, the journal kept."""
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, pa.ArrowException):
                pass
            self._writer = None
        self._temp.unlink(missing_ok=True)
        if self._journal is not None:
            self._journal.close()
        self._opened = False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
