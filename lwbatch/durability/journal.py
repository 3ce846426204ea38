"""The durable state of a run: what survives a crash, and how a rerun resumes.

Beside the output `scores.parquet` lives a hidden directory `.scores.parquet.lwbatch/`:

    manifest.json        what the run is (input fingerprint, models, id column, lang)
    rows-000001.parquet  completed rows, one segment per row group (atomic: tmp + rename);
                         its metadata holds the input row numbers of its invalid rows
    answers-000001.log   one JSON line per (model, revision) answer, appended as each
                         arrives; rotated at every segment so it holds only open rows
    ledger.f64           wall-clock times of the budget's recent requests

An answer is appended (one write(2), no buffering in the process) before its row
counts as done, so a process killed at any instant loses no answer it had received;
fsync at every segment and every few seconds covers a machine crash. At the end the
segments are folded, one at a time, into the output (tmp + fsync + rename) and the
directory is removed. A rerun reads the segments' rev_ids into a compressed bitmap,
the answers of unfinished rows into a small map, and the ledger into the limiter.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyroaring import BitMap64

from lwbatch.errors import OutputError, UsageError
from lwbatch.results import ErrorType, Score

FORMAT_VERSION = 1
RETRYABLE = frozenset({ErrorType.TRANSIENT_ERROR.value, ErrorType.RATE_LIMITED.value})
_SYNC_EVERY = 2.0  # seconds between fsyncs of the answer log and the ledger
_FINGERPRINT_BYTES = 1 << 20
_INVALID_KEY = b"lwbatch.invalid_rows"


def journal_dir(output: Path) -> Path:
    return output.with_name(f".{output.name}.lwbatch")


def fingerprint(path: Path) -> dict[str, Any]:
    """Size plus a hash of the first and last MiB: cheap, and changes when the data does."""
    size = path.stat().st_size
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        digest.update(fh.read(_FINGERPRINT_BYTES))
        if size > _FINGERPRINT_BYTES:
            fh.seek(max(size - _FINGERPRINT_BYTES, _FINGERPRINT_BYTES))
            digest.update(fh.read())
    return {"path": str(path.resolve()), "size": size, "blake2b": digest.hexdigest()}


@dataclass(slots=True)
class ResumeState:
    """What an earlier, interrupted run left: enough to skip everything it did."""

    done: BitMap64 = field(default_factory=BitMap64)  # rev_ids whose row is in a segment
    partial: dict[int, dict[str, Score]] = field(default_factory=dict)  # unfinished rows
    invalid_rows: BitMap64 = field(default_factory=BitMap64)  # input rows already written
    undeployed: set[str] = field(default_factory=set)
    ledger: list[float] = field(default_factory=list)  # wall-clock grant times
    rows_done: int = 0  # rows in segments (valid and invalid)
    retried: int = 0  # answers dropped to be asked again (transient failures)

    @property
    def resumed(self) -> bool:
        return bool(self.rows_done or self.partial)


def encode_answer(model: str, rev_id: int, score: Score) -> bytes:
    error = None if score.error is None else score.error.value
    return (
        orjson.dumps(
            [
                model,
                rev_id,
                score.prediction,
                score.probability,
                score.model_version,
                error,
                score.error_message,
            ]
        )
        + b"\n"
    )


def decode_answer(line: bytes) -> tuple[str, int, Score] | None:
    """None for a torn or foreign line (the tail of a write cut by a crash)."""
    try:
        model, rev_id, prediction, probability, version, error, message = orjson.loads(line)
        return (
            model,
            int(rev_id),
            Score(prediction, probability, version, ErrorType(error) if error else None, message),
        )
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None


class Journal:
    """Writes and reads the directory described above. Not thread-safe; one run at a time."""

    def __init__(self, output: Path, *, models: Sequence[str], manifest: dict[str, Any]) -> None:
        self.output = output
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
        self._lock_fd: int | None = None

    # -- opening -----------------------------------------------------------------
    def open(self, *, restart: bool, retry_failed: bool, ledger_keep: int) -> ResumeState:
        """Start fresh or resume; refuses to mix runs that differ in what they compute."""
        self._ledger_keep = ledger_keep
        self._lock()
        try:
            self._sweep()
            if restart and self.dir.exists():
                shutil.rmtree(self.dir)
            if not self.dir.exists():
                if self.output.exists() and not restart:
                    self._adopt_output()
                else:
                    return self._create()
            return self._resume(retry_failed)
        except BaseException:
            self._close_logs()
            self._unlock()
            raise

    def _lock(self) -> None:
        # One run per output: a second one would interleave segments and answers.
        path = self.output.with_name(f".{self.output.name}.lock")
        try:
            self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise OutputError(
                f"cannot create its lock file ({exc.strerror})", path=self.output
            ) from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise UsageError(
                f"another lwbatch run is writing {self.output}; wait for it to finish, "
                "or choose another output"
            ) from None

    def _sweep(self) -> None:
        """Remove what killed processes left: temporary files and retired journals."""
        for stale in self.output.parent.glob(f".{self.output.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        for retired in self.output.parent.glob(f"{self.dir.name}.done-*"):
            shutil.rmtree(retired, ignore_errors=True)
        if self.dir.is_dir():
            for partial in self.dir.glob("*.tmp"):
                partial.unlink(missing_ok=True)

    def _adopt_output(self) -> None:
        """Rerunning a finished run: its output becomes the first segment of a resume.

        Nothing is asked again unless it failed transiently, and a run that differs in
        what it computes is refused exactly as for an interrupted one.
        """
        try:
            metadata = pq.read_schema(self.output).metadata or {}
        except (OSError, pa.ArrowException):
            metadata = {}
        previous = metadata.get(b"lwbatch")
        if previous is None:
            raise UsageError(
                f"{self.output} already exists and was not written by lwbatch; "
                "pass --restart to replace it, or choose another output"
            )
        self._check_same(orjson.loads(previous))
        self._create()
        self._close_logs()
        segment = self.dir / "rows-000000.parquet"
        try:
            os.link(self.output, segment)  # the output stays as it is until the new commit
        except OSError:
            shutil.copyfile(self.output, segment)

    def _check_same(self, previous: dict[str, Any]) -> None:
        for key, label in (
            ("format", "journal format"),
            ("input", "input file"),
            ("id_column", "--id-column"),
            ("lang", "--lang"),
            ("models", "models"),
        ):
            if previous.get(key) != self.manifest.get(key):
                raise UsageError(
                    f"{self.output} belongs to a run with another {label} "
                    f"({_show(previous.get(key))} instead of {_show(self.manifest.get(key))}); "
                    "rerun it as it was, choose another output, or pass --restart to replace it"
                )

    def _create(self) -> ResumeState:
        try:
            self.dir.mkdir()
            _write_atomic(
                self.dir / "manifest.json", orjson.dumps(self.manifest, option=orjson.OPT_INDENT_2)
            )
        except OSError as exc:
            raise OutputError(
                f"cannot create its journal {self.dir.name} ({exc.strerror})", path=self.output
            ) from None
        self._open_logs()
        return ResumeState()

    def _resume(self, retry_failed: bool) -> ResumeState:
        try:
            previous = orjson.loads((self.dir / "manifest.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            raise UsageError(
                f"{self.dir} is not a readable lwbatch journal; remove it or pass --restart"
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
            rewrite=[(m, r, s) for r, scores in state.partial.items() for m, s in scores.items()]
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
            retry_mask = None
            if retry_failed:
                for model in self.models:
                    errors = table.column(model).combine_chunks().field("error")
                    hit = pc.is_in(errors, pa.array(sorted(RETRYABLE)))
                    hit = pc.fill_null(hit, False)
                    retry_mask = hit if retry_mask is None else pc.or_(retry_mask, hit)
            if retry_mask is not None and pc.any(retry_mask).as_py():
                # Rows with a transient failure are taken out of the segment and reopened:
                # their terminal answers are kept, the failed ones are asked again.
                for row in table.filter(retry_mask).to_pylist():
                    scores = {}
                    for model in self.models:
                        cell = row[model]
                        if cell["error"] in RETRYABLE:
                            state.retried += 1
                            continue
                        scores[model] = _score_from_cell(cell)
                    state.partial[row["rev_id"]] = scores
                table = table.filter(pc.invert(retry_mask))
                rewrites.append((path, table))
            # Invalid rows keep the value they had (0, negatives) but are tracked by row
            # number in the segment's own metadata, so the two can never disagree.
            invalid = (table.schema.metadata or {}).get(_INVALID_KEY)
            if invalid:
                self._invalid |= BitMap64.deserialize(invalid)
            first = table.column(self.models[0]).combine_chunks().field("error")
            scored = pc.fill_null(pc.not_equal(first, ErrorType.INVALID_INPUT.value), True)
            state.done.update(table.filter(scored).column("rev_id").to_pylist())
            state.rows_done += table.num_rows
            for model in self.models:
                errors = table.column(model).combine_chunks().field("error")
                if pc.any(pc.equal(errors, ErrorType.MODEL_NOT_DEPLOYED.value)).as_py():
                    state.undeployed.add(model)
        return rewrites

    def _load_answers(self, state: ResumeState, retry_failed: bool) -> None:
        for path in sorted(self.dir.glob("answers-*.log")):
            self._answers_seq = max(self._answers_seq, int(path.stem.split("-")[1]))
            for line in path.read_bytes().splitlines():
                answer = decode_answer(line)
                if answer is None:
                    continue
                model, rev_id, score = answer
                if rev_id in state.done or model not in self.models:
                    continue
                if retry_failed and score.error is not None and score.error.value in RETRYABLE:
                    state.retried += 1
                    continue
                if score.error is ErrorType.MODEL_NOT_DEPLOYED:
                    state.undeployed.add(model)
                state.partial.setdefault(rev_id, {})[model] = score

    def _load_ledger(self, state: ResumeState) -> None:
        path = self.dir / "ledger.f64"
        if path.exists():
            data = path.read_bytes()
            times = array("d")
            times.frombytes(data[: len(data) - len(data) % 8])
            state.ledger = list(times[-self._ledger_keep :]) if self._ledger_keep else []

    def _open_logs(self, rewrite: Iterable[tuple[str, int, Score]] = ()) -> None:
        self._rotate_answers(rewrite)
        ledger = self.dir / "ledger.f64"
        self._ledger_fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    # -- writing -------------------------------------------------------------------
    def record_answers(self, model: str, answers: Iterable[tuple[int, Score]]) -> None:
        """Append answers before their rows count as done."""
        assert self._answers_fd is not None
        os.write(self._answers_fd, b"".join(encode_answer(model, r, s) for r, s in answers))
        self._dirty = True
        self._maybe_sync()

    def record_grant(self, wall_time: float) -> None:
        assert self._ledger_fd is not None
        os.write(self._ledger_fd, array("d", [wall_time]).tobytes())
        self._dirty = True

    def commit_segment(
        self,
        table: pa.Table,
        invalid_rows: Iterable[int],
        open_answers: Iterable[tuple[str, int, Score]],
    ) -> None:
        """Make a row group durable, then start a fresh answer log for the open rows."""
        self._segment += 1
        mine = BitMap64(invalid_rows)
        metadata = {**(table.schema.metadata or {}), _INVALID_KEY: mine.serialize()}
        _write_segment(
            self.dir / f"rows-{self._segment:06d}.parquet", table.replace_schema_metadata(metadata)
        )
        self._invalid |= mine
        self._rotate_answers(open_answers)
        self._compact_ledger()

    def _rotate_answers(self, keep: Iterable[tuple[str, int, Score]]) -> None:
        old = sorted(self.dir.glob("answers-*.log"))
        self._answers_seq += 1
        path = self.dir / f"answers-{self._answers_seq:06d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b"".join(encode_answer(m, r, s) for m, r, s in keep))
        os.fsync(fd)
        _fsync_dir(self.dir)
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
            _write_atomic(path, times[-self._ledger_keep :].tobytes())
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

    def close(self) -> None:
        """Make everything durable and let another run have the output."""
        self.sync()
        self._close_logs()
        self._unlock()

    def _close_logs(self) -> None:
        for fd in (self._answers_fd, self._ledger_fd):
            if fd is not None:
                os.close(fd)
        self._answers_fd = self._ledger_fd = None

    # -- finishing -----------------------------------------------------------------
    def fold(self, schema: pa.Schema, temp: Path) -> int:
        """Write every segment, in order, into `temp`; returns the row count."""
        rows = 0
        # The manifest rides along in the output, so rerunning a finished run resumes it.
        schema = schema.with_metadata(
            {
                "lwbatch": orjson.dumps(self.manifest),
                _INVALID_KEY: self._invalid.serialize(),
            }
        )
        with pq.ParquetWriter(temp, schema, compression="zstd") as writer:
            for path in self._segments():
                table = pq.read_table(path)
                writer.write_table(
                    table.select(schema.names).cast(schema), row_group_size=max(table.num_rows, 1)
                )
                rows += table.num_rows
        return rows

    def holds_work(self) -> bool:
        """Whether anything here is worth resuming: a segment or a real answer.

        A 5xx is one: its request counted at the gateway, and the ledger keeps it.
        """
        if self._segments():
            return True
        for path in self.dir.glob("answers-*.log"):
            for line in path.read_bytes().splitlines():
                answer = decode_answer(line)
                if answer is not None and answer[2].error is not ErrorType.MODEL_NOT_DEPLOYED:
                    return True
        return False

    def remove(self) -> None:
        """Retire the journal by one atomic rename, so it is never seen half-deleted."""
        self.close()
        if not self.dir.exists():
            return
        retired = self.dir.with_name(f"{self.dir.name}.done-{os.getpid()}")
        os.replace(self.dir, retired)
        _fsync_dir(self.dir.parent)
        shutil.rmtree(retired, ignore_errors=True)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            self.output.with_name(f".{self.output.name}.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None


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
    )


def _write_segment(path: Path, table: pa.Table) -> None:
    temp = path.with_suffix(".tmp")
    pq.write_table(table, temp, compression="zstd")
    with open(temp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _show(value: Any) -> str:
    if isinstance(value, dict) and "path" in value:
        return f"{value['path']} ({value['size']:,} bytes)"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return repr(value)
