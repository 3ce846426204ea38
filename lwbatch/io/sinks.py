"""The output formats lwbatch writes, chosen by the output's name."""

from __future__ import annotations

from pathlib import Path

from lwbatch.errors import UsageError
from lwbatch.io.parquet_sink import ParquetSink
from lwbatch.seams import Sink

# A new format: its Sink class here, under the suffixes that choose it.
SINKS: dict[str, type[ParquetSink]] = {".parquet": ParquetSink, ".pq": ParquetSink}


def open_sink(output: Path | str, *, input: str | None = None) -> Sink:
    """The sink for the path `output`, by its suffix; `input` may not be the same file."""
    path = Path(output)
    sink = SINKS.get(path.suffix.lower())
    if sink is None:
        raise UsageError(f"`output` {path}: lwbatch writes Parquet; name the file *.parquet")
    if input is not None and path.exists() and Path(input).exists() and path.samefile(input):
        raise UsageError(f"`output` {path} is the input file; choose another output path")
    return sink(path)
