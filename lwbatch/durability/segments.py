"""A journal's segments, ``rows-NNNNNN.parquet``: finished rows in the merged layout
(lwbatch/io/rows.py), one segment per batch of rows, each written whole or not at all;
its metadata holds the input row numbers of its invalid rows. At the end they are
folded, in order, into the run's sink."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyroaring import BitMap64

from lwbatch.durability.disk import Disk
from lwbatch.engine.resume import RETRYABLE, WIKI_WIDE, ResumeState
from lwbatch.io.arrays import array, scalar
from lwbatch.keys import KeyLayout
from lwbatch.results import ErrorType, Score

INVALID_ROWS_KEY = "lwbatch.invalid_rows"
Rewrite = tuple[Path, pa.Table]


class Segments:
    """The segments of one journal directory, for `models` keyed by `layout`."""

    def __init__(self, directory: Path, models: list[str], layout: KeyLayout, disk: Disk):
        self._dir = directory
        self._models = models
        self._layout = layout
        self._disk = disk
        self._last = 0
        self.invalid = BitMap64()  # input rows written as invalid rows, in every segment

    def paths(self) -> list[Path]:
        return sorted(self._dir.glob("rows-*.parquet"))

    def load(self, state: ResumeState, *, retry_failed: bool) -> list[Rewrite]:
        """Into `state`, the keys done and the refusals learned; with `retry_failed`,
        rows with a failure of the service are reopened: their other answers go to
        `state.partial`, and the segments to write again without them are returned."""
        rewrites: list[Rewrite] = []
        for path in self.paths():
            import pyarrow.compute as pc  # only a resume needs it: ~9 MB imported

            self._last = max(self._last, int(path.stem.split("-")[1]))
            table = _read(path)
            # Invalid rows keep the value they had (0, negatives) but are tracked by row
            # number in the segment's own metadata, so the two can never disagree.
            invalid = (table.schema.metadata or {}).get(INVALID_ROWS_KEY.encode())
            if invalid:
                self.invalid |= BitMap64.deserialize(invalid)
            first = table.column(self._models[0]).combine_chunks().field("error")
            valid = pc.fill_null(pc.not_equal(first, _text(ErrorType.INVALID_INPUT.value)), _TRUE)
            reopen = self._failed(table) if retry_failed else None
            if reopen is not None:
                self._reopen(state, table.filter(reopen))
                keep = pc.invert(reopen)
                table, valid = table.filter(keep), pc.filter(valid, keep)
                rewrites.append((path, table))
            state.done.update(self._layout.keys_of(table.filter(valid)))
            state.rows_done += table.num_rows
            self._note_refusals(state, table)
        return rewrites

    def _failed(self, table: pa.Table) -> pa.ChunkedArray | None:
        """Rows with a failure of the service in some column, or None if there is none."""
        import pyarrow.compute as pc  # only a resume needs it: ~9 MB imported

        mask = None
        for model in self._models:
            errors = table.column(model).combine_chunks().field("error")
            hit = pc.fill_null(pc.is_in(errors, array(sorted(RETRYABLE), pa.string())), _FALSE)
            mask = hit if mask is None else pc.or_(mask, hit)
        return mask if mask is not None and pc.any(mask).as_py() else None

    def _reopen(self, state: ResumeState, reopened: pa.Table) -> None:
        # Their terminal answers are kept; the failed ones are asked again.
        rows = reopened.to_pylist()
        for key, row in zip(self._layout.keys_of(reopened), rows, strict=True):
            scores = {}
            for model in self._models:
                cell = row[model]
                if cell["error"] in RETRYABLE:
                    state.retried += 1
                    continue
                scores[model] = _score_from_cell(cell)
            state.partial[key] = scores

    def _note_refusals(self, state: ResumeState, table: pa.Table) -> None:
        import pyarrow.compute as pc  # only a resume needs it: ~9 MB imported

        wiki_column = self._layout.wiki_column
        for model in self._models:
            errors = table.column(model).combine_chunks().field("error")
            for error in WIKI_WIDE:
                hit = pc.fill_null(pc.equal(errors, _text(error.value)), _FALSE)
                if not pc.any(hit).as_py():
                    continue
                if wiki_column is None:
                    state.refused.add((model, "", error))
                    continue
                for wiki in pc.unique(table.column(wiki_column).filter(hit)).to_pylist():
                    if wiki is not None:
                        state.refused.add((model, wiki, error))

    def rewrite(self, rewrites: list[Rewrite]) -> None:
        for path, table in rewrites:
            self._disk.write_table(path, table)

    def commit(self, rows: pa.Table, invalid_rows: Sequence[int]) -> None:
        """`rows` as the next segment, with the input rows of its invalid rows."""
        self._last += 1
        mine = BitMap64(invalid_rows)
        metadata = {**(rows.schema.metadata or {}), INVALID_ROWS_KEY.encode(): mine.serialize()}
        self._disk.write_table(
            self._dir / f"rows-{self._last:06d}.parquet", rows.replace_schema_metadata(metadata)
        )
        self.invalid |= mine

    def adopt(self, tables: Iterator[pa.Table], invalid: bytes | None) -> None:
        """A finished output's rows (read back from its sink) as the first segment."""
        segment = self._dir / "rows-000000.parquet"
        temp = segment.with_suffix(".tmp")
        writer: pq.ParquetWriter | None = None
        try:
            for table in tables:
                if writer is None:
                    schema = table.schema.with_metadata(
                        {INVALID_ROWS_KEY: invalid} if invalid else {}
                    )
                    writer = pq.ParquetWriter(temp, schema, compression="zstd")
                writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
        finally:
            if writer is not None:
                writer.close()
        if writer is not None:
            self._disk.publish(temp, segment)

    def read(self, path: Path) -> pa.Table:
        """A segment's rows, as the sink takes them."""
        return _read(path).replace_schema_metadata(None)


# Arrow scalars, not Python values: pyarrow converts those with pa.scalar, which
# imports pandas where it is installed.
_TRUE = scalar(True, pa.bool_())
_FALSE = scalar(False, pa.bool_())


def _text(value: str) -> pa.Scalar:
    return scalar(value, pa.string())


def _read(path: Path) -> pa.Table:
    # Not pq.read_table: its dataset layer imports pandas where it is installed.
    with pq.ParquetFile(path) as file:
        return file.read()


def _score_from_cell(cell: dict[str, Any]) -> Score:
    probability = cell["probability"]
    if probability is not None and not isinstance(probability, dict):
        probability = dict(probability)
    error = cell["error"]
    return Score(
        cell["prediction"],
        probability,
        cell["model_version"],
        ErrorType(error) if error else None,
        cell["error_message"],
        latency_ms=cell.get("latency_ms"),
        attempts=cell.get("attempts"),
    )


__all__ = ["INVALID_ROWS_KEY", "Segments"]
