"""The output formats lwbatch writes, chosen by name or by the output's suffix."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pyarrow as pa

from lwbatch.engine.stats import OutputTally
from lwbatch.errors import RestartNeeded, UsageError
from lwbatch.io.arrays import empty_table
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
    "long": (
        lambda path, specs, lang: Recorded(LongSink(path, specs=specs, lang=lang), path),
        (),
    ),
    "jsonl": (
        lambda path, specs, lang: Recorded(JsonlSink(path, specs=specs, lang=lang), path),
        (".jsonl", ".ndjson"),
    ),
    "ores-json": (
        lambda path, specs, lang: Recorded(OresJsonSink(path, specs=specs, lang=lang), path),
        (".json",),
    ),
}


class _Wrapping:
    """A sink in front of another: its name and row count are the other's."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    @property
    def name(self) -> str:
        return self.sink.name

    @property
    def rows_written(self) -> int:
        return self.sink.rows_written


class WithoutDetail(_Wrapping):
    """A :class:`Sink` seen through the merged layout: latency_ms and attempts, which the
    journal keeps, are left out of what it is given (unless it asks for them with a
    true `detailed` attribute)."""

    def open(self, schema: pa.Schema) -> None:
        self.sink.open(_merged(schema))

    def write(self, rows: pa.Table) -> None:
        self.sink.write(without_detail(rows))

    def commit(self, metadata: Mapping[str, bytes]) -> None:
        self.sink.commit(metadata)

    def abort(self) -> None:
        self.sink.abort()


class Tallied(_Wrapping):
    """A sink that counts what it is given, per model column: the output's own figures
    (resumed rows included), for the summary."""

    def __init__(self, sink: Sink, models: Sequence[str]) -> None:
        super().__init__(sink)
        self.tally = OutputTally(tuple(models))

    def open(self, schema: pa.Schema) -> None:
        self.sink.open(schema)

    def write(self, rows: pa.Table) -> None:
        self.tally.add(rows)
        self.sink.write(rows)

    def commit(self, metadata: Mapping[str, bytes]) -> None:
        self.sink.commit(metadata)

    def abort(self) -> None:
        self.sink.abort()


class Recorded(_Wrapping):
    """A sink for a format that cannot be read back (JSON, `long`), with a hidden Parquet
    copy of its merged rows beside it (``.NAME.lwbatch.parquet``), committed first. A
    rerun of a finished output reads the copy back, as it reads a Parquet output: it
    asks again only what failed transiently, instead of refusing or paying for all."""

    detailed = True  # gives each sink the layout it asks for

    def __init__(self, sink: Sink, path: Path) -> None:
        super().__init__(sink)
        self.path = path
        copy = path.with_name(f".{path.name}.lwbatch.parquet")
        self.copy = ParquetSink(copy, temp=path.with_name(f".{path.name}.copy.{os.getpid()}.tmp"))

    def open(self, schema: pa.Schema) -> None:
        self.sink.open(schema if getattr(self.sink, "detailed", False) else _merged(schema))
        self.copy.open(_merged(schema))

    def write(self, rows: pa.Table) -> None:
        self.sink.write(rows if getattr(self.sink, "detailed", False) else without_detail(rows))
        self.copy.write(without_detail(rows))

    def commit(self, metadata: Mapping[str, bytes]) -> None:
        # The copy first: a crash between the two leaves the old output with a copy that
        # is newer, which a rerun adopts and writes out again.
        self.copy.commit(metadata)
        self.sink.commit(metadata)

    def abort(self) -> None:
        self.sink.abort()
        self.copy.abort()

    def read_back(self) -> tuple[dict[str, bytes], Iterator[pa.Table]] | None:
        if not self.path.exists():
            return None
        found = self.copy.read_back()
        if found is None:
            raise RestartNeeded(
                f"{self.path} already exists without the hidden copy lwbatch keeps beside "
                f"it ({self.copy.path.name}) to resume from; pass `restart=True` to score "
                "again, or choose another output"
            )
        return found

    def __repr__(self) -> str:
        return f"<Recorded {self.sink!r}>"


def _merged(schema: pa.Schema) -> pa.Schema:
    return without_detail(empty_table(schema)).schema


def for_rows(sink: Sink) -> Sink:
    """`sink` as the run writes to it: detailed rows only where it asks for them."""
    return sink if getattr(sink, "detailed", False) else WithoutDetail(sink)


def format_of(output: Path | str, format: str | None = None) -> str:
    """The format `format` names, else the one `output`'s suffix chooses."""
    path = Path(output)
    suffix = path.suffix.lower()
    found = next((name for name, (_, suffixes) in FORMATS.items() if suffix in suffixes), None)
    if format is not None:
        if format not in FORMATS:
            raise UsageError(f"`format` {format!r}: give one of {', '.join(FORMATS)}")
        # A name that says another format would mislead whoever opens the file.
        if found is not None and found != format and {found, format} != {"parquet", "long"}:
            # long is Parquet, named as Parquet (its suffix alone would choose parquet).
            suffixes = FORMATS[format][1] or FORMATS["parquet"][1]
            wanted = " or ".join(f"*{x}" for x in suffixes)
            raise UsageError(
                f"`output` {path} is named as {found} but `format` is {format}; name it "
                f"{wanted}, or give another `format`"
            )
        return format
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


__all__ = ["FORMATS", "Recorded", "WithoutDetail", "for_rows", "format_of", "open_sink"]
