"""The output formats lwbatch writes, chosen by name or by the output's suffix."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pyarrow as pa

from lwbatch.errors import UsageError
from lwbatch.io.long_sink import LongSink
from lwbatch.io.ores_sinks import JsonlSink, OresJsonSink
from lwbatch.io.parquet_sink import ParquetSink
from lwbatch.io.rows import without_detail
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.seams import Sink

_Factory = Callable[[Path, Sequence[ModelSpec], str], Sink]

# A new format: its Sink here, under its name and the suffixes that choose it.
FORMATS: dict[str, tuple[_Factory, tuple[str, ...]]] = {
    "parquet": (lambda path, specs, lang: ParquetSink(path), (".parquet", ".pq")),
    "long": (lambda path, specs, lang: LongSink(path, specs=specs, lang=lang), ()),
    "jsonl": (
        lambda path, specs, lang: JsonlSink(path, specs=specs, lang=lang),
        (".jsonl", ".ndjson"),
    ),
    "ores-json": (lambda path, specs, lang: OresJsonSink(path, specs=specs, lang=lang), (".json",)),
}


class WithoutDetail:
    """A :class:`Sink` seen through the merged layout: latency_ms and attempts, which the
    journal keeps, are left out of what it is given (unless it asks for them with a
    true `detailed` attribute)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    @property
    def name(self) -> str:
        return self.sink.name

    @property
    def rows_written(self) -> int:
        return self.sink.rows_written

    def open(self, schema: pa.Schema) -> None:
        self.sink.open(without_detail(schema.empty_table()).schema)

    def write(self, rows: pa.Table) -> None:
        self.sink.write(without_detail(rows))

    def commit(self, metadata: Mapping[str, bytes]) -> None:
        self.sink.commit(metadata)

    def abort(self) -> None:
        self.sink.abort()


def for_rows(sink: Sink) -> Sink:
    """`sink` as the run writes to it: detailed rows only where it asks for them."""
    return sink if getattr(sink, "detailed", False) else WithoutDetail(sink)


def format_of(output: Path | str, format: str | None = None) -> str:
    """The format `format` names, else the one `output`'s suffix chooses."""
    path = Path(output)
    if format is not None:
        if format not in FORMATS:
            raise UsageError(f"`format` {format!r}: give one of {', '.join(FORMATS)}")
        return format
    suffix = path.suffix.lower()
    found = next((name for name, (_, suffixes) in FORMATS.items() if suffix in suffixes), None)
    if found is None:
        raise UsageError(
            f"`output` {path}: name the file *.parquet, *.jsonl or *.json, or give `format` "
            f"({', '.join(FORMATS)})"
        )
    return found


def open_sink(
    output: Path | str,
    *,
    input: str | Sequence[str] | None = None,
    format: str | None = None,
    specs: Sequence[ModelSpec] = (),
    lang: str = "en",
) -> Sink:
    """The sink writing `output` in `format` (else chosen by its suffix); `input` (one
    path or several) may not be the same file. `specs` are the run's models, `lang` the
    wiki of rows without one."""
    path = Path(output)
    factory, _ = FORMATS[format_of(path, format)]
    inputs = [input] if isinstance(input, str) else list(input or ())
    for given in inputs:
        if path.exists() and Path(given).exists() and path.samefile(given):
            raise UsageError(f"`output` {path} is the input file; choose another output path")
    return factory(path, specs, lang)


__all__ = ["FORMATS", "WithoutDetail", "for_rows", "format_of", "open_sink"]
