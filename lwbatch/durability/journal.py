"""The durable state of a run: what survives a crash, and how a rerun resumes.

Beside the output `scores.parquet` lives a hidden directory `.scores.parquet.lwbatch/`:

    manifest.json        what the run is (input fingerprint, models, id column, lang)
    rows-000001.parquet  finished rows in the merged layout (lwbatch/io/rows.py), one
                         segment per batch of rows (atomic); its metadata holds the
                         input row numbers of its invalid rows
    answers-000001.log   one JSON line per (model, key) answer, appended as each
                         arrives; rotated at every segment so it holds only open rows
    ledger.f64           wall-clock times of the budget's recent requests (minus the
                         time: one the shared budget's file holds; see run._to_restore)

The segments are the journal's own storage, whatever the output format: at the end
they are folded, in order, into the run's :class:`~lwbatch.seams.Sink`, which commits
atomically, and the directory is retired by one rename.

An answer is appended (one write(2), no buffering in the process) before its row
counts as done, so a process killed at any instant loses no answer it had received;
fsync at every segment and every few seconds covers a machine crash. A rerun reads
the segments' keys into a compact set, the answers of unfinished rows into a small
map, and the ledger into the limiter.
"""

from __future__ import annotations

import os
import shutil
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyroaring import BitMap64

from lwbatch.durability.atomic import fsync_dir, publish, write_atomic
from lwbatch.durability.lock import OutputLock
from lwbatch.engine.resume import WIKI_WIDE, ResumeState
from lwbatch.errors import OutputError, RestartNeeded, describe
from lwbatch.keys import KeyLayout, RowKey, key_from_json, key_to_json
from lwbatch.results import ErrorType, Score
from lwbatch.seams import Sink

# 2: keys are (wiki, rev_id) where the input names a wiki (answer lines [wiki, rev_id]).
FORMAT_VERSION = 2
# Answers a rerun asks again (unless told not to): failures of the service, not answers
# about the revision.
RETRYABLE = frozenset(
    {
        ErrorType.TRANSIENT_ERROR.value,
        ErrorType.RATE_LIMITED.value,
        ErrorType.SERVER_ERROR.value,
    }
)
MANIFEST_KEY = "lwbatch"
INVALID_ROWS_KEY = "lwbatch.invalid_rows"
_SYNC_EVERY = 2.0  # seconds between fsyncs of the answer log and the ledger


def journal_dir(output: Path) -> Path:
    return output.with_name(f".{output.name}.lwbatch")


def encode_answer(model: str, key: RowKey, score: Score) -> bytes:
    error = None if score.error is None else score.error.value
    return (
        orjson.dumps(
            [
                model,
                key_to_json(key),
                score.prediction,
                score.probability,
                score.model_version,
                error,
                score.error_message,
                score.latency_ms,
                score.attempts,
            ]
        )
        + b"\n"
    )


def decode_answer(line: bytes) -> tuple[str, RowKey, Score] | None:
    """None for a torn or foreign line (the tail of a write cut by a crash)."""
    try:
        values = orjson.loads(line)
        # Lines of an lwbatch before latency and attempts were kept have seven values.
        model, key, prediction, probability, version, error, message = values[:7]
        latency, attempts = values[7:9] if len(values) == 9 else (None, None)
        if len(values) not in (7, 9):
            return None
        return (
            model,
            key_from_json(key),
            Score(
                prediction,
                probability,
                version,
                ErrorType(error) if error else None,
                message,
                latency_ms=latency,
                attempts=attempts,
            ),
        )
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None


Previous = tuple[dict[str, bytes], Iterator[pa.Table]]


class FileJournal:
    """The directory described above (the default :class:`~lwbatch.seams.Journal`).

    Not thread-safe; one run per output at a time (an advisory lock enforces it).
    """

    def __init__(
        self,
        output: Path,
        *,
        models: Sequence[str],
        manifest: dict[str, Any],
        layout: KeyLayout | None = None,
    ) -> None:
        self.output = output
        self.layout = layout or KeyLayout()
        self.dir = journal_dir(output)
        self.models = list(models)
        self.manifest = {"format": FORMAT_VERSION, **manifest, "models": self.models}
        self._answers_fd: int | None = None
        self._ledger_fd: int | None = None
        self._segment = 0
        self._answers_seq = 0
        self._invalid = BitMap64()
        self._synced = time.monotonic()
        self._dirty = False
        self._ledger_keep = 0
        self._lock = OutputLock(output)

    # -- opening -----------------------------------------------------------------
    def open(
        self,
        *,
        restart: bool,
        retry_failed: bool,
        ledger_keep: int,
        previous: Callable[[], Previous | None] | None = None,
    ) -> ResumeState:
        """Start fresh or resume; refuses to mix runs that differ in what they compute.

        `previous()` reads a finished output back from the sink, only when nothing else
        is kept, and under the output's lock: rerunning a finished run adopts it as the
        first segment, so only transient failures are asked again.
        """
        self._ledger_keep = ledger_keep
        self._lock.acquire()
        try:
            with self._io("open"):
                if self.dir.is_dir():
                    for partial in self.dir.glob("*.tmp"):
                        partial.unlink(missing_ok=True)
                    # The manifest is written last: without one, creating this journal
                    # was cut short and it holds nothing.
                    if restart or not (self.dir / "manifest.json").exists():
                        shutil.rmtree(self.dir)
                if not self.dir.exists():
                    found = None if previous is None or restart else previous()
                    if found is None:
                        return self._create()
                    self._adopt(*found)
                return self._resume(retry_failed)
        except BaseException:
            self._close_logs()
            self._lock.release()
            raise

    @contextmanager
    def _io(self, doing: str) -> Iterator[None]:
        """Disk errors (full, read-only, removed) as one-line OutputErrors."""
        try:
            yield
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(
                f"cannot {doing} its journal {self.dir.name} ({describe(exc)})",
                path=self.output,
            ) from None

    @property
    def location(self) -> str:
        return str(self.dir)

    def _adopt(self, metadata: dict[str, bytes], tables: Iterator[pa.Table]) -> None:
        manifest = metadata.get(MANIFEST_KEY)
        if manifest is None:
            raise RestartNeeded(
                f"{self.output} already exists and was not written by lwbatch; "
                "pass `restart=True` to replace it, or choose another output"
            )
        self._check_same(orjson.loads(manifest))
        self.dir.mkdir()
        invalid = metadata.get(INVALID_ROWS_KEY)
        segment = self.dir / "rows-000000.parquet"
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
            publish(temp, segment)
        self._write_manifest()

    def _check_same(self, previous: dict[str, Any]) -> None:
        if previous.get("format") == 1:
            if self.layout.wiki_column is not None:
                raise RestartNeeded(
                    f"{self.output} belongs to a run of an earlier lwbatch, which keyed rows "
                    f"by rev_id alone; this input's {self.layout.wiki_column!r} column now "
                    "keys them by (wiki, rev_id): pass `restart=True` to score it afresh, "
                    "or choose another output"
                )
            # Without a wiki column, format 1 is format 2: rows keyed by rev_id alone.
            previous = {**previous, "format": FORMAT_VERSION, "wiki_column": None}
        for key, label in (
            ("format", "journal format"),
            ("input", "input file"),
            ("id_column", "`id_column`"),
            ("lang", "`lang`"),
            ("wiki_column", "`wiki_column`"),
            ("keep_columns", "`keep_columns`"),
            ("models", "model list"),
        ):
            if previous.get(key) != self.manifest.get(key):
                raise RestartNeeded(
                    f"{self.output} belongs to a run with another {label} "
                    f"({_show(previous.get(key))} instead of {_show(self.manifest.get(key))}); "
                    "rerun it as it was, choose another output, "
                    "or pass `restart=True` to replace it"
                )

    def _create(self) -> ResumeState:
        try:
            self.dir.mkdir()
            self._write_manifest()
        except OSError as exc:
            raise OutputError(
                f"cannot create its journal {self.dir.name} ({exc.strerror})", path=self.output
            ) from None
        self._open_logs()
        return ResumeState()

    def _write_manifest(self) -> None:
        write_atomic(
            self.dir / "manifest.json", orjson.dumps(self.manifest, option=orjson.OPT_INDENT_2)
        )

    def _resume(self, retry_failed: bool) -> ResumeState:
        try:
            previous = orjson.loads((self.dir / "manifest.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            raise RestartNeeded(
                f"{self.dir} is not a readable lwbatch journal; remove it or pass `restart=True`"
            ) from None
        self._check_same(previous)
        state = ResumeState()
        rewrites = self._load_segments(state, retry_failed)
        state.invalid_rows = BitMap64(self._invalid)
        self._load_answers(state, retry_failed)
        self._load_ledger(state)
        # The reopened rows' answers go into the fresh log (fsynced) before the
        # segments that held them are rewritten without them.
        self._open_logs(
            rewrite=[(m, k, s) for k, scores in state.partial.items() for m, s in scores.items()]
        )
        for path, table in rewrites:
            _write_segment(path, table)
        return state

    def _segments(self) -> list[Path]:
        return sorted(self.dir.glob("rows-*.parquet"))

    def _load_segments(self, state: ResumeState, retry_failed: bool) -> list[tuple[Path, pa.Table]]:
        rewrites: list[tuple[Path, pa.Table]] = []
        for path in self._segments():
            self._segment = max(self._segment, int(path.stem.split("-")[1]))
            table = pq.read_table(path)
            # Invalid rows keep the value they had (0, negatives) but are tracked by row
            # number in the segment's own metadata, so the two can never disagree.
            invalid = (table.schema.metadata or {}).get(INVALID_ROWS_KEY.encode())
            if invalid:
                self._invalid |= BitMap64.deserialize(invalid)
            first = table.column(self.models[0]).combine_chunks().field("error")
            valid = pc.fill_null(pc.not_equal(first, ErrorType.INVALID_INPUT.value), True)
            retry_mask = None
            if retry_failed:
                for model in self.models:
                    errors = table.column(model).combine_chunks().field("error")
                    hit = pc.fill_null(pc.is_in(errors, pa.array(sorted(RETRYABLE))), False)
                    retry_mask = hit if retry_mask is None else pc.or_(retry_mask, hit)
            if retry_mask is not None and pc.any(retry_mask).as_py():
                # Rows with a transient failure are taken out of the segment and reopened:
                # their terminal answers are kept, the failed ones are asked again.
                reopened = table.filter(retry_mask)
                rows = reopened.to_pylist()
                for key, row in zip(self.layout.keys_of(reopened), rows, strict=True):
                    scores = {}
                    for model in self.models:
                        cell = row[model]
                        if cell["error"] in RETRYABLE:
                            state.retried += 1
                            continue
                        scores[model] = _score_from_cell(cell)
                    state.partial[key] = scores
                keep = pc.invert(retry_mask)
                table = table.filter(keep)
                valid = pc.filter(valid, keep)
                rewrites.append((path, table))
            state.done.update(self.layout.keys_of(table.filter(valid)))
            state.rows_done += table.num_rows
            self._note_refusals(state, table)
        return rewrites

    def _note_refusals(self, state: ResumeState, table: pa.Table) -> None:
        wiki_column = self.layout.wiki_column
        for model in self.models:
            errors = table.column(model).combine_chunks().field("error")
            for error in WIKI_WIDE:
                hit = pc.fill_null(pc.equal(errors, error.value), False)
                if not pc.any(hit).as_py():
                    continue
                if wiki_column is None:
                    state.refused.add((model, "", error))
                    continue
                for wiki in pc.unique(table.column(wiki_column).filter(hit)).to_pylist():
                    if wiki is not None:
                        state.refused.add((model, wiki, error))

    def _load_answers(self, state: ResumeState, retry_failed: bool) -> None:
        for path in sorted(self.dir.glob("answers-*.log")):
            self._answers_seq = max(self._answers_seq, int(path.stem.split("-")[1]))
            for line in path.read_bytes().splitlines():
                answer = decode_answer(line)
                if answer is None:
                    continue
                model, key, score = answer
                if key in state.done or model not in self.models:
                    continue
                if retry_failed and score.error is not None and score.error.value in RETRYABLE:
                    state.retried += 1
                    continue
                if score.error in WIKI_WIDE:
                    state.refused.add((model, key.wiki, score.error))
                state.partial.setdefault(key, {})[model] = score

    def _load_ledger(self, state: ResumeState) -> None:
        path = self.dir / "ledger.f64"
        if path.exists():
            data = path.read_bytes()
            times = array("d")
            times.frombytes(data[: len(data) - len(data) % 8])
            state.ledger = list(times[-self._ledger_keep :]) if self._ledger_keep else []

    def _open_logs(self, rewrite: Iterable[tuple[str, RowKey, Score]] = ()) -> None:
        self._rotate_answers(rewrite)
        ledger = self.dir / "ledger.f64"
        self._ledger_fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    # -- writing -------------------------------------------------------------------
    def record_answers(self, model: str, answers: Iterable[tuple[RowKey, Score]]) -> None:
        """Append answers before their rows count as done."""
        assert self._answers_fd is not None
        with self._io("write to"):
            os.write(self._answers_fd, b"".join(encode_answer(model, k, s) for k, s in answers))
            self._dirty = True
            self._maybe_sync()

    def record_grant(self, wall_time: float) -> None:
        assert self._ledger_fd is not None
        with self._io("write to"):
            os.write(self._ledger_fd, array("d", [wall_time]).tobytes())
        self._dirty = True

    def commit_rows(
        self,
        rows: pa.Table,
        invalid_rows: Sequence[int],
        open_answers: Iterable[tuple[str, RowKey, Score]],
    ) -> None:
        """Make finished rows durable, then start a fresh answer log for the open rows."""
        self._segment += 1
        mine = BitMap64(invalid_rows)
        metadata = {**(rows.schema.metadata or {}), INVALID_ROWS_KEY.encode(): mine.serialize()}
        with self._io("write to"):
            _write_segment(
                self.dir / f"rows-{self._segment:06d}.parquet",
                rows.replace_schema_metadata(metadata),
            )
            self._invalid |= mine
            self._rotate_answers(open_answers)
            self._compact_ledger()

    def _rotate_answers(self, keep: Iterable[tuple[str, RowKey, Score]]) -> None:
        old = sorted(self.dir.glob("answers-*.log"))
        self._answers_seq += 1
        path = self.dir / f"answers-{self._answers_seq:06d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b"".join(encode_answer(m, k, s) for m, k, s in keep))
        os.fsync(fd)
        fsync_dir(self.dir)
        if self._answers_fd is not None:
            os.close(self._answers_fd)
        self._answers_fd = fd
        for stale in old:
            if stale != path:
                stale.unlink(missing_ok=True)

    def _compact_ledger(self) -> None:
        path = self.dir / "ledger.f64"
        if self._ledger_keep and path.stat().st_size > 16 * self._ledger_keep:
            times = array("d")
            data = path.read_bytes()
            times.frombytes(data[: len(data) - len(data) % 8])
            write_atomic(path, times[-self._ledger_keep :].tobytes())
            if self._ledger_fd is not None:
                os.close(self._ledger_fd)
            self._ledger_fd = os.open(path, os.O_WRONLY | os.O_APPEND, 0o600)

    def _maybe_sync(self) -> None:
        if time.monotonic() - self._synced >= _SYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        if not self._dirty:
            return
        for fd in (self._answers_fd, self._ledger_fd):
            if fd is not None:
                os.fsync(fd)
        self._synced = time.monotonic()
        self._dirty = False

    def suspend(self) -> None:
        """Make everything durable and let another run have the output."""
        try:
            with self._io("sync"):
                self.sync()
        finally:
            self._close_logs()
            self._lock.release()

    def _close_logs(self) -> None:
        for fd in (self._answers_fd, self._ledger_fd):
            if fd is not None:
                os.close(fd)
        self._answers_fd = self._ledger_fd = None

    # -- finishing -----------------------------------------------------------------
    def fold_into(self, sink: Sink) -> int:
        """Write every segment, in order, to `sink`; returns the row count."""
        rows = 0
        for path in self._segments():
            with self._io("read"):
                table = pq.read_table(path)
            sink.write(table.replace_schema_metadata(None))
            rows += table.num_rows
        return rows

    def metadata(self) -> dict[str, bytes]:
        # The manifest rides along in the output, so rerunning a finished run resumes it.
        return {
            MANIFEST_KEY: orjson.dumps(self.manifest),
            INVALID_ROWS_KEY: self._invalid.serialize(),
        }

    def holds_work(self) -> bool:
        """Whether anything here is worth resuming: a segment or a real answer.

        A 5xx is one: its request counted at the gateway, and the ledger keeps it.
        """
        try:
            if self._segments():
                return True
            for path in self.dir.glob("answers-*.log"):
                for line in path.read_bytes().splitlines():
                    answer = decode_answer(line)
                    if answer is not None and answer[2].error not in WIKI_WIDE:
                        return True
        except OSError:
            return True  # unreadable: keep it rather than delete paid answers
        return False

    def remove(self) -> None:
        """Retire the journal by one atomic rename, so it is never seen half-deleted."""
        self._close_logs()
        try:
            if self.dir.exists():
                retired = self.dir.with_name(f"{self.dir.name}.done-{os.getpid()}")
                with self._io("retire"):
                    os.replace(self.dir, retired)
                    fsync_dir(self.dir.parent)
                shutil.rmtree(retired, ignore_errors=True)
        finally:
            # Only now may another run take the output: the journal is gone.
            self._lock.release()


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


def _write_segment(path: Path, table: pa.Table) -> None:
    temp = path.with_suffix(".tmp")
    pq.write_table(table, temp, compression="zstd")
    publish(temp, path)


def _show(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("files"), list):
        names = [str(f.get("path")) for f in value["files"][:3] if isinstance(f, dict)]
        more = ", ..." if len(value["files"]) > 3 else ""
        return f"{len(value['files'])} files: {', '.join(names)}{more}"
    if isinstance(value, dict) and "path" in value:
        return f"{value['path']} ({value['size']:,} bytes)"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if value is None:
        return "none"
    return repr(value)
