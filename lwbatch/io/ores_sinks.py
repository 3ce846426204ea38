"""Outputs in the shapes ORES users already read: JSON lines like ORES' `score_revisions`
tool wrote (`jsonl`), and ORES v3 score documents (`ores-json`).

Within a wiki ORES named models by kind (``damaging``, not ``enwiki-damaging``): both
formats do the same where the kind is unique among the run's models, and use the full
name otherwise (``revertrisk-language-agnostic``). Errors keep the type names ORES gave
them where one exists (RevisionNotFound, TextDeleted, ...), else lwbatch's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from lwbatch.durability.atomic import temporary_name
from lwbatch.errors import OutputError, UsageError
from lwbatch.io.destination import TextFile, check_destination
from lwbatch.io.jsonl_source import JSON_TEXT
from lwbatch.io.rows import wiki_column_of
from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import ErrorType
from lwbatch.wikis import wikipedia, wikis

# What ORES called the errors lwbatch has a counterpart for; a name in the message wins.
# The document of the rows that could not be sent (no usable rev_id or wiki).
INVALID = "invalid_input"
_ORES_TYPES: dict[str, tuple[str, ...]] = {
    ErrorType.NOT_FOUND: ("RevisionNotFound", "PageNotFound"),
    ErrorType.DELETED: ("TextDeleted", "CommentDeleted", "UserDeleted"),
}


def ores_names(specs: Sequence[ModelSpec]) -> dict[str, str]:
    """Column -> the name ORES would have used: the kind where it is unique."""
    kinds = [s.kind for s in specs]
    return {
        s.column: s.kind if s.kind is not None and kinds.count(s.kind) == 1 else s.column
        for s in specs
    }


def ores_error(error: str, message: str | None) -> dict[str, Any]:
    names = _ORES_TYPES.get(error, ())
    said = next((n for n in names if message and n in message), None)
    kind = said or (names[0] if names else error)
    return {"error": {"type": kind, "message": message or kind}}


def ores_score(value: Mapping[str, Any]) -> dict[str, Any]:
    """One model's struct of a merged row -> ORES' ``{"score": ...}`` or ``{"error": ...}``."""
    if value["error"] is not None:
        return ores_error(value["error"], value["error_message"])
    score: dict[str, Any] = {"prediction": value["prediction"]}
    if value["probability"] is not None:
        score["probability"] = dict(value["probability"])
    return {"score": score}


class _OresSink:
    """What both formats share: the output path, the model names, atomic publishing."""

    example = "scores.jsonl"

    def __init__(self, path: Path | str, *, specs: Sequence[ModelSpec], lang: str = "en") -> None:
        self.path = Path(path)
        self._names = ores_names(specs)
        self._default_wiki = wikipedia(lang).dbname
        self._keys: list[str] = []
        self._wiki_column: str | None = None
        self._json_text: set[str] = set()
        self._rows = 0

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def rows_written(self) -> int:
        return self._rows

    def open(self, schema: pa.Schema) -> None:
        check_destination(self.path, self.example)
        missing = sorted(set(self._names) - set(schema.names))
        if missing:
            raise OutputError(f"the rows lack the column {missing[0]!r}", path=self.path)
        # Key columns up to rev_id, then the kept input columns; JSON text read from
        # JSON lines goes back out as the values it was.
        self._keys = [n for n in schema.names if n not in self._names]
        self._wiki_column = wiki_column_of(schema)
        self._json_text = {
            f.name for f in schema if f.metadata and f.metadata.get(JSON_TEXT) is not None
        }
        self._rows = 0

    def _records(self, rows: pa.Table) -> Iterator[dict[str, Any]]:
        self._rows += rows.num_rows
        return iter(rows.to_pylist())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"


class JsonlSink(_OresSink):
    """One line per key: the key columns and kept input columns, then
    ``"score": {model: {"score"|"error"}}``, as ORES' `score_revisions` tool appended
    to each input line."""

    def __init__(self, path: Path | str, *, specs: Sequence[ModelSpec], lang: str = "en") -> None:
        super().__init__(path, specs=specs, lang=lang)
        self._file = TextFile(self.path)

    def open(self, schema: pa.Schema) -> None:
        super().open(schema)
        if "score" in self._keys:
            raise UsageError(
                "`keep_columns` 'score': each jsonl line's scores go there; leave that "
                "column out or rename it"
            )

    def write(self, rows: pa.Table) -> None:
        lines = bytearray()
        for record in self._records(rows):
            line = {
                key: orjson.Fragment(record[key])
                if key in self._json_text and record[key] is not None
                else record[key]
                for key in self._keys
            }
            line["score"] = {
                short: ores_score(record[column]) for column, short in self._names.items()
            }
            lines += orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        self._file.write(bytes(lines))

    def commit(self, metadata: Mapping[str, bytes]) -> None:
        self._file.publish()

    def abort(self) -> None:
        self._file.discard()


class OresJsonSink(_OresSink):
    """One JSON object holding an ORES v3 document per wiki:
    ``{wiki: {"models": {name: {"version"}}, "scores": {rev_id: {name: ...}}}}``; each
    model with entries in a wiki's scores is in its models (version null where none of
    them is a score). ORES v3 has no place for other columns: kept columns are refused.

    Each wiki's scores go to a temporary file of their own as they come, so memory does
    not grow with the output; commit joins them. Invalid rows go in a document of their
    own, ``"invalid_input"``, under ``"invalid-N"`` (N counting them).
    """

    example = "scores.json"

    def __init__(self, path: Path | str, *, specs: Sequence[ModelSpec], lang: str = "en") -> None:
        super().__init__(path, specs=specs, lang=lang)
        self._parts: dict[str, TextFile] = {}
        self._versions: dict[str, dict[str, str | None]] = {}
        self._unkeyed = 0

    def open(self, schema: pa.Schema) -> None:
        super().open(schema)
        kept = [n for n in self._keys if n not in ("rev_id", self._wiki_column)]
        if kept:
            raise UsageError(
                f"`keep_columns` {', '.join(map(repr, kept))}: an ORES v3 document (ores-json) "
                "has no place for other columns; write jsonl or parquet to keep them"
            )

    def _wiki(self, record: Mapping[str, Any]) -> str:
        value = record[self._wiki_column] if self._wiki_column is not None else None
        if not value:
            return self._default_wiki
        wiki = wikis().from_key(value)
        # A value that names no wiki is an invalid row's: kept together, not as a wiki.
        return wiki.dbname if wiki.known else INVALID

    def write(self, rows: pa.Table) -> None:
        chunks: dict[str, bytearray] = {}
        first = next(iter(self._names))
        for record in self._records(rows):
            rev_id = record["rev_id"]
            invalid = record[first]["error"] == "invalid_input"
            wiki = INVALID if invalid else self._wiki(record)
            if invalid:
                # Numbered: two invalid rows may share a raw rev_id (0, -1) or have none.
                self._unkeyed += 1
                rev_id = f"invalid-{self._unkeyed}"
            versions = self._versions.setdefault(wiki, {})
            scores = {}
            for column, short in self._names.items():
                value = record[column]
                # Every model with an entry in a wiki's scores is in its `models` (with
                # no version where none answered for that wiki).
                if versions.get(short) is None:
                    versions[short] = value["model_version"]
                scores[short] = ores_score(value)
            chunk = chunks.setdefault(wiki, bytearray())
            chunk += b","
            chunk += orjson.dumps(str(rev_id))
            chunk += b":"
            chunk += orjson.dumps(scores)
        for wiki, chunk in chunks.items():
            part = self._parts.get(wiki)
            if part is None:
                # Named by number, not by the wiki; closed between writes (a part per wiki).
                number = len(self._parts)
                temp = temporary_name(self.path.with_name(f"{self.path.name}.part{number}"))
                part = self._parts[wiki] = TextFile(self.path, temp, keep_open=False)
            part.write(bytes(chunk))

    def commit(self, metadata: Mapping[str, bytes]) -> None:
        out = TextFile(self.path)
        try:
            out.write(b"{")
            for n, wiki in enumerate(sorted(self._parts)):
                part = self._parts[wiki]
                part.close()
                models = {name: {"version": v} for name, v in self._versions[wiki].items()}
                head = orjson.dumps(wiki) + b':{"models":' + orjson.dumps(models)
                out.write((b"," if n else b"") + head + b',"scores":{')
                with part.temp.open("rb") as fh:
                    fh.read(1)  # the first entry's comma
                    while block := fh.read(1 << 20):
                        out.write(block)
                out.write(b"}}")
            out.write(b"}\n")
            out.publish()
        except BaseException:
            out.discard()
            self.abort()
            raise
        self.abort()  # the parts, now joined

    def abort(self) -> None:
        for part in self._parts.values():
            part.discard()
        self._parts.clear()


__all__ = ["JsonlSink", "OresJsonSink", "ores_error", "ores_names", "ores_score"]
