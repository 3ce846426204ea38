"""The durable state of a run: what survives a crash, and how a rerun resumes.

Beside the output `scores.parquet` lives a hidden directory `.scores.parquet.lwbatch/`:

    manifest.json        what the run is (input fingerprint, models, key columns):
                         lwbatch/durability/manifest.py
    rows-000001.parquet  finished rows, one segment per batch of rows (atomic):
                         lwbatch/durability/segments.py
    answers-000001.log   one line per (model, key) answer, appended as each arrives;
                         rotated at every segment: lwbatch/durability/answer_log.py
    ledger.f64           wall-clock times of the budget's recent requests:
                         lwbatch/durability/grant_file.py

At the end the segments are folded, in order, into the run's
:class:`~lwbatch.seams.Sink`, which commits atomically, and the directory is retired by
one rename. An answer is appended before its row counts as done, so a process killed
at any instant loses no answer it had received, but for those that arrive while a
segment is committed (lwbatch/durability/commits.py); fsync at every segment and every
few seconds covers a machine crash. A rerun reads the segments' keys into a compact set,
the answers of unfinished rows into a small map, and the grant times into the limiter.
Every write goes through a :class:`~lwbatch.durability.disk.Disk`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from pyroaring import BitMap64

from lwbatch.durability.answer_log import AnswerLog, decode_answer, encode_answer
from lwbatch.durability.atomic import fsync_dir
from lwbatch.durability.disk import Disk
from lwbatch.durability.grant_file import GrantFile
from lwbatch.durability.lock import OutputLock
from lwbatch.durability.manifest import FORMAT_VERSION, check_same, read_manifest
from lwbatch.durability.segments import INVALID_ROWS_KEY, Segments
from lwbatch.engine.resume import RETRYABLE, ResumeState
from lwbatch.errors import OutputError, RestartNeeded, describe
from lwbatch.keys import KeyLayout, RowKey
from lwbatch.results import Score
from lwbatch.seams import Sink

MANIFEST_KEY = "lwbatch"
_SYNC_EVERY = 2.0  # seconds between fsyncs of the answer log and the grant file


def journal_dir(output: Path) -> Path:
    return output.with_name(f".{output.name}.lwbatch")


Previous = tuple[dict[str, bytes], Iterator[pa.Table]]


class FileJournal:
    """The directory described above (the default :class:`~lwbatch.seams.Journal`).

    Not thread-safe; one run per output at a time (an advisory lock enforces it).
    `disk`: the file operations its writes go through (tests make them fail).
    """

    def __init__(
        self,
        output: Path,
        *,
        models: Sequence[str],
        manifest: dict[str, Any],
        layout: KeyLayout | None = None,
        disk: Disk | None = None,
    ) -> None:
        self.output = output
        self.layout = layout or KeyLayout()
        self.dir = journal_dir(output)
        self.models = list(models)
        self.manifest = {"format": FORMAT_VERSION, **manifest, "models": self.models}
        self._disk = disk or Disk()
        self._segments = Segments(self.dir, self.models, self.layout, self._disk)
        self._answers = AnswerLog(self.dir, self._disk)
        self._grants = GrantFile(self.dir / "ledger.f64", self._disk, keep=0)
        self._synced = time.monotonic()
        self._dirty = False
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
        self._grants = GrantFile(self.dir / "ledger.f64", self._disk, keep=ledger_keep)
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
        check_same(orjson.loads(manifest), self.manifest, self.layout, self.output)
        self.dir.mkdir()
        self._segments.adopt(tables, metadata.get(INVALID_ROWS_KEY))
        self._write_manifest()

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
        data = orjson.dumps(self.manifest, option=orjson.OPT_INDENT_2)
        self._disk.write_atomic(self.dir / "manifest.json", data)

    def _resume(self, retry_failed: bool) -> ResumeState:
        previous = read_manifest(self.dir / "manifest.json", self.dir)
        check_same(previous, self.manifest, self.layout, self.output)
        state = ResumeState()
        rewrites = self._segments.load(state, retry_failed=retry_failed)
        state.invalid_rows = BitMap64(self._segments.invalid)
        self._answers.load(state, self.models, retry_failed=retry_failed)
        state.ledger = self._grants.load()
        # The reopened rows' answers go into the fresh log (fsynced) before the
        # segments that held them are rewritten without them.
        self._open_logs(
            rewrite=[(m, k, s) for k, scores in state.partial.items() for m, s in scores.items()]
        )
        self._segments.rewrite(rewrites)
        return state

    def _open_logs(self, rewrite: Iterable[tuple[str, RowKey, Score]] = ()) -> None:
        self._answers.rotate(rewrite)
        self._grants.open()

    # -- writing -------------------------------------------------------------------
    def record_answers(self, model: str, answers: Iterable[tuple[RowKey, Score]]) -> None:
        """Append answers before their rows count as done."""
        with self._io("write to"):
            self._answers.record(model, answers)
            self._dirty = True
            if time.monotonic() - self._synced >= _SYNC_EVERY:
                self.sync()

    def record_grant(self, wall_time: float) -> None:
        with self._io("write to"):
            self._grants.record(wall_time)
        self._dirty = True

    def commit_rows(
        self,
        rows: pa.Table,
        invalid_rows: Sequence[int],
        open_answers: Iterable[tuple[str, RowKey, Score]],
    ) -> None:
        """Make finished rows durable, then start a fresh answer log for the open rows."""
        with self._io("write to"):
            self._segments.commit(rows, invalid_rows)
            self._answers.rotate(open_answers)
            self._grants.compact()

    def sync(self) -> None:
        if not self._dirty:
            return
        for fd in (self._answers.fd, self._grants.fd):
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
        self._answers.close()
        self._grants.close()

    # -- finishing -----------------------------------------------------------------
    def fold_into(self, sink: Sink) -> int:
        """Write every segment, in order, to `sink`; returns the row count."""
        rows = 0
        for path in self._segments.paths():
            with self._io("read"):
                table = self._segments.read(path)
            sink.write(table)
            rows += table.num_rows
        return rows

    def metadata(self) -> dict[str, bytes]:
        # The manifest rides along in the output, so rerunning a finished run resumes it.
        return {
            MANIFEST_KEY: orjson.dumps(self.manifest),
            INVALID_ROWS_KEY: self._segments.invalid.serialize(),
        }

    def holds_work(self) -> bool:
        """Whether anything here is worth resuming: a segment or a real answer.

        A 5xx is one: its request counted at the gateway, and the ledger keeps it.
        """
        try:
            return bool(self._segments.paths()) or self._answers.holds_answers()
        except OSError:
            return True  # unreadable: keep it rather than delete paid answers

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


__all__ = [
    "FORMAT_VERSION",
    "INVALID_ROWS_KEY",
    "MANIFEST_KEY",
    "RETRYABLE",
    "FileJournal",
    "decode_answer",
    "encode_answer",
    "journal_dir",
]
