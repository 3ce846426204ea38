"""A Spark job's progress area: the answers its tasks committed, kept on the output's
own file system (a local directory, HDFS, any pyarrow file system), so that running the
job again, a task Spark retries, or a second action on a scored DataFrame asks only
what is still unanswered.

    AREA/manifest.json                   the job's key layout and number of partitions
    AREA/p-00003/<attempt>-<n>.parquet   partition 3's answers: model, wiki, rev_id, answer

A task commits what it received every few seconds as one Parquet file, written under a
hidden name and renamed into place (atomic on local file systems and HDFS). An
attempt's files merge as a binary counter does: after c commits it holds popcount(c)
files, at most 15 for a day of 5-second commits. A task that starts from earlier
attempts' files merges them into one. Rows of one key meet in one partition as long as
the number of partitions stays the same, so the manifest fixes it for the job's reruns.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from lwbatch.durability.answer_log import Answer, decode_answer, encode_answer
from lwbatch.engine.resume import RETRYABLE, WIKI_WIDE, ResumeState
from lwbatch.errors import UsageError
from lwbatch.keys import RowKey
from lwbatch.results import Score

log = logging.getLogger("lwbatch")
FORMAT = 1
_MANIFEST = "manifest.json"
_META = b"lwbatch.requests"  # {attempt: requests it had sent when the file was written}
SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("wiki", pa.string()),
        ("rev_id", pa.int64()),
        ("answer", pa.binary()),  # the answer as the journal encodes it
        # "column": an output column's answer for a row key (what a rerun skips);
        # "cache": a model's fresh answer for (wiki database, rev_id), for the score cache.
        ("kind", pa.string()),
    ]
)
COLUMN, CACHE = "column", "cache"


@dataclass(frozen=True, slots=True)
class ProgressArea:
    """A directory on a pyarrow file system; `where` is how the user named it."""

    filesystem: pafs.FileSystem
    path: str
    where: str

    @classmethod
    def at(cls, location: str | Path) -> ProgressArea:
        text = str(location)
        if "://" not in text:
            absolute = str(Path(text).absolute())
            return cls(pafs.LocalFileSystem(), absolute, text)
        try:
            filesystem, path = pafs.FileSystem.from_uri(text)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise UsageError(f"`progress` {text}: cannot reach its file system: {exc}") from None
        return cls(filesystem, path.rstrip("/"), text)

    def exists(self) -> bool:
        return bool(self.filesystem.get_file_info(self.path).type != pafs.FileType.NotFound)

    def check(self, layout: str | None = None, *, restart: bool = False) -> None:
        """Refuse a place that is a file, a directory that is not a progress area, or
        (unless `restart`) an area of a job of another key `layout`, creating nothing."""
        manifest = self._read_manifest()
        if manifest is not None and layout is not None and not restart:
            self._same_job(manifest, layout)

    def prepare(self, layout: str, partitions: int, *, restart: bool) -> int:
        """Start or continue the area for a job of this key `layout`; the number of
        partitions its tasks use (the one the area was started with)."""
        manifest = self._read_manifest()  # refuses a place that is not a progress area
        if restart and manifest is not None:
            self.remove()
            manifest = None
        if manifest is not None:
            self._same_job(manifest, layout)
            return int(manifest["partitions"])
        parent = self.path.rsplit("/", 1)[0] or "/"
        if self.filesystem.get_file_info(parent).type != pafs.FileType.Directory:
            raise UsageError(f"`progress` {self.where}: its directory does not exist")
        if not self.exists():
            self.filesystem.create_dir(self.path, recursive=False)
        body = {"format": FORMAT, "layout": layout, "partitions": partitions}
        _write_atomically(self.filesystem, f"{self.path}/{_MANIFEST}", orjson.dumps(body))
        return partitions

    def _same_job(self, manifest: dict[str, Any], layout: str) -> None:
        if manifest.get("layout") != layout or manifest.get("format") != FORMAT:
            raise UsageError(
                f"the progress area {self.where} holds the progress of another job "
                f"({manifest.get('layout')}; this one is {layout}): pass `restart=True` "
                "to discard it, or choose another place"
            )

    def _read_manifest(self) -> dict[str, Any] | None:
        if self.filesystem.get_file_info(self.path).type == pafs.FileType.File:
            raise UsageError(f"`progress` {self.where} is a file; give a directory")
        path = f"{self.path}/{_MANIFEST}"
        if self.filesystem.get_file_info(path).type != pafs.FileType.File:
            if self.exists() and self._listing(self.path):
                raise UsageError(
                    f"`progress` {self.where} exists and is not an lwbatch progress area; "
                    "choose another place"
                )
            return None
        with self.filesystem.open_input_stream(path) as stream:
            try:
                body = orjson.loads(stream.read())
            except orjson.JSONDecodeError:
                body = None
        if not isinstance(body, dict) or not isinstance(body.get("partitions"), int):
            raise UsageError(
                f"the progress area {self.where}: its manifest is damaged; pass `restart=True` "
                "to discard it"
            )
        return body

    def partition(self, index: int, attempt: str) -> PartitionProgress:
        return PartitionProgress(self, index, attempt)

    def answers(self, kind: str = COLUMN) -> Iterator[Answer]:
        """Every answer of `kind` kept in the area (a key may come twice)."""
        for directory in self._listing(self.path):
            if directory.type == pafs.FileType.Directory and directory.base_name[:2] == "p-":
                for part in _parts(self.filesystem, directory.path):
                    table = _read(self.filesystem, part.path)
                    if table is not None:
                        yield from _decode(table, kind)

    def tally(self) -> tuple[int, int]:
        """The answers kept, and the requests the job's attempts had sent by their last
        commit (every run of the job so far): for progress lines while it runs."""
        answers, requests = 0, dict[str, int]()
        for directory in self._listing(self.path):
            if directory.type != pafs.FileType.Directory or directory.base_name[:2] != "p-":
                continue
            for part in _parts(self.filesystem, directory.path):
                try:
                    table = pq.read_table(part.path, columns=["kind"], filesystem=self.filesystem)
                except (pa.ArrowException, OSError):
                    continue  # merged away while listed
                answers += sum(1 for kind in table.column("kind").to_pylist() if kind == COLUMN)
                _merge_requests(requests, table.schema.metadata)
        return answers, sum(requests.values())

    @property
    def uri(self) -> str:
        """The area as Spark names it."""
        return Path(self.path).as_uri() if "://" not in self.where else self.where.rstrip("/")

    def write_known(self, lines: Sequence[bytes]) -> None:
        """The driver's pre-flight answers (journal lines), for the job's reruns."""
        answers = [a for a in map(decode_answer, lines) if a is not None]
        _write_table(self.filesystem, _table(answers, COLUMN), f"{self.path}/known.parquet")

    def read_known(self) -> list[bytes]:
        """What :meth:`write_known` kept (nothing before the area holds a job)."""
        path = f"{self.path}/known.parquet"
        if self.filesystem.get_file_info(path).type != pafs.FileType.File:
            return []
        table = _read(self.filesystem, path)
        return [] if table is None else list(table.column("answer").to_pylist())

    def write_cached(self, tables: Iterator[pa.Table]) -> str | None:
        """The score cache's answers (tables of SCHEMA), as one file Spark reads (None:
        there are none); written batch by batch."""
        path = f"{self.path}/cached.parquet"
        hidden = f"{self.path}/.cached.{uuid.uuid4().hex[:8]}.tmp"
        rows = 0
        with pq.ParquetWriter(hidden, SCHEMA, filesystem=self.filesystem) as writer:
            for table in tables:
                writer.write_table(table)
                rows += table.num_rows
        if not rows:
            self.filesystem.delete_file(hidden)
            return None
        self.filesystem.move(hidden, path)
        return f"{self.uri}/cached.parquet"

    def remove(self) -> None:
        """Remove the area; only an lwbatch progress area (or an empty directory)."""
        if not self.exists():
            return
        manifest = f"{self.path}/{_MANIFEST}"
        if self.filesystem.get_file_info(manifest).type != pafs.FileType.File:
            if self._listing(self.path):
                raise UsageError(
                    f"`progress` {self.where} is not an lwbatch progress area; not removed"
                )
        self.filesystem.delete_dir(self.path)

    def _listing(self, path: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(path, allow_not_found=True)
        return [i for i in self.filesystem.get_file_info(selector) if i.base_name[0] not in "._"]


@dataclass(slots=True)
class Loaded:
    """What a task found of its partition: the answers to keep, and the requests each
    earlier attempt had sent by its last commit."""

    state: ResumeState
    answers: int = 0
    requests: dict[str, int] = field(default_factory=dict)


class PartitionProgress:
    """One task attempt's view of its partition's answers: `load` them once, `add`
    fresh ones as they come (on the event loop), `commit` them (blocking: in a thread)."""

    def __init__(self, area: ProgressArea, index: int, attempt: str) -> None:
        self._fs = area.filesystem
        self.directory = f"{area.path}/p-{index:05d}"
        self.attempt = attempt
        self._pending: list[Answer] = []
        self._for_cache: list[Answer] = []
        self._lock = threading.Lock()
        self._parts: list[tuple[str, int]] = []  # this attempt's files and their commits
        self._seq = 0
        self._requests: dict[str, int] = {}

    def load(self, models: Sequence[str]) -> Loaded:
        """The partition's answers (failures of the service left out, to be asked
        again); earlier attempts' files are merged into one on the way."""
        self._fs.create_dir(self.directory, recursive=True)
        found = _parts(self._fs, self.directory)
        best: dict[tuple[str, RowKey], Score] = {}
        cached: list[pa.Table] = []
        loaded = Loaded(ResumeState())
        for part in found:
            table = _read(self._fs, part.path)
            if table is None:
                continue
            _merge_requests(loaded.requests, table.schema.metadata)
            cached.append(table.filter(pc.equal(table.column("kind"), CACHE)))
            for model, key, score in _decode(table, COLUMN):
                kept = best.get((model, key))
                if kept is None or (kept.error is not None and kept.error.value in RETRYABLE):
                    best[(model, key)] = score
        state = loaded.state
        for (model, key), score in best.items():
            if model not in models:
                continue
            if score.error is not None and score.error.value in RETRYABLE:
                state.retried += 1
                continue
            if score.error in WIKI_WIDE:
                state.refused.add((model, key.wiki, score.error))
            state.partial.setdefault(key, {})[model] = score
            loaded.answers += 1
        if len(found) > 1:
            answers = [
                (m, k, s)
                for (m, k), s in best.items()
                if s.error is None or s.error.value not in RETRYABLE
            ]
            table = pa.concat_tables([_table(answers, COLUMN), *cached])
            self._write_table(table, loaded.requests, f"{self.attempt}-base")
            for part in found:
                _delete(self._fs, part.path)
        self._requests = dict(loaded.requests)
        return loaded

    def add(self, model: str, answers: list[tuple[RowKey, Score]]) -> None:
        self._pending.extend((model, key, score) for key, score in answers)

    def add_for_cache(self, model: str, answers: Sequence[tuple[str, int, Score]]) -> None:
        """Fresh answers of `model` for the score cache, added when the job is done."""
        fresh = [(model, RowKey(w, r), s) for w, r, s in answers]
        with self._lock:  # the engine keeps answers from a worker thread
            self._for_cache.extend(fresh)

    def take(self) -> tuple[list[Answer], list[Answer]]:
        """The answers added since the last take (on the event loop): the columns', and
        those for the score cache."""
        pending, self._pending = self._pending, []
        with self._lock:
            cached, self._for_cache = self._for_cache, []
        return pending, cached

    def commit(self, taken: tuple[list[Answer], list[Answer]], requests: int) -> None:
        """Write what was `taken` as one file; `requests`: what this attempt has sent."""
        answers, cached = taken
        if not answers and not cached and requests == self._requests.get(self.attempt, 0):
            return
        self._requests[self.attempt] = requests
        self._seq += 1
        table = pa.concat_tables([_table(answers, COLUMN), _table(cached, CACHE)])
        self._parts.append((self._write_table(table, {self.attempt: requests}), 1))
        while len(self._parts) >= 2 and self._parts[-2][1] == self._parts[-1][1]:
            (older, weight), (newer, _) = self._parts[-2], self._parts[-1]
            read = (_read(self._fs, older), _read(self._fs, newer))
            tables = [t for t in read if t is not None] or [_table([], COLUMN)]
            self._seq += 1
            merged = self._write_table(pa.concat_tables(tables), self._requests)
            self._parts[-2:] = [(merged, 2 * weight)]
            for path in (older, newer):
                _delete(self._fs, path)

    def put_back(self, taken: tuple[list[Answer], list[Answer]]) -> None:
        """Answers a commit could not write: they go with the next one."""
        self._pending[:0] = taken[0]
        with self._lock:
            self._for_cache[:0] = taken[1]

    def _write_table(self, table: pa.Table, requests: dict[str, int], name: str = "") -> str:
        name = name or f"{self.attempt}-{self._seq:05d}"
        table = table.replace_schema_metadata({_META: orjson.dumps(requests)})
        path = f"{self.directory}/{name}.parquet"
        _write_table(self._fs, table, path)
        return path


def _table(answers: Sequence[Answer], kind: str) -> pa.Table:
    return pa.table(
        {
            "model": [m for m, _, _ in answers],
            "wiki": [k.wiki for _, k, _ in answers],
            "rev_id": [k.rev_id for _, k, _ in answers],
            "answer": [encode_answer(m, k, s) for m, k, s in answers],
            "kind": [kind] * len(answers),
        },
        schema=SCHEMA,
    )


def _write_table(filesystem: pafs.FileSystem, table: pa.Table, path: str) -> None:
    """`table` at `path`, whole or not at all: written under a hidden name, renamed."""
    directory, name = path.rsplit("/", 1)
    hidden = f"{directory}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    pq.write_table(table, hidden, filesystem=filesystem)
    filesystem.move(hidden, path)


def _delete(filesystem: pafs.FileSystem, path: str) -> None:
    try:
        filesystem.delete_file(path)
    except FileNotFoundError:
        pass  # merged away by another attempt of this partition already


def _parts(filesystem: pafs.FileSystem, directory: str) -> list[pafs.FileInfo]:
    selector = pafs.FileSelector(directory, allow_not_found=True)
    return sorted(
        (
            info
            for info in filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith(".")
        ),
        key=lambda info: info.base_name,
    )


def _read(filesystem: pafs.FileSystem, path: str) -> pa.Table | None:
    try:
        return pq.read_table(path, filesystem=filesystem)
    except (pa.ArrowException, OSError) as exc:
        # Renamed into place whole, so only another program makes one unreadable.
        log.warning("progress: %s is unreadable (%s); its answers are asked again", path, exc)
        return None


def _decode(table: pa.Table, kind: str) -> Iterator[Answer]:
    mine = table.filter(pc.equal(table.column("kind"), kind))
    for line in mine.column("answer").to_pylist():
        answer = decode_answer(line)
        if answer is not None:
            yield answer


def _merge_requests(into: dict[str, int], metadata: dict[bytes, bytes] | None) -> None:
    if not metadata or _META not in metadata:
        return
    for attempt, count in orjson.loads(metadata[_META]).items():
        into[attempt] = max(into.get(attempt, 0), int(count))


def _write_atomically(filesystem: pafs.FileSystem, path: str, body: bytes) -> None:
    hidden = f"{path.rsplit('/', 1)[0]}/.{uuid.uuid4().hex[:8]}.tmp"
    with filesystem.open_output_stream(hidden) as stream:
        stream.write(body)
    filesystem.move(hidden, path)


__all__ = ["SCHEMA", "Loaded", "PartitionProgress", "ProgressArea"]
