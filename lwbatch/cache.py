"""A score cache across runs: one SQLite file in WAL mode.

SQLite because several lwbatch processes (and readers such as `lwbatch cache stats`)
may share one cache: WAL lets readers go on while one writer commits, a committed
answer survives a crash of the process, and a keyed lookup costs microseconds. Only
final answers are kept, keyed by (model, model version, wiki, rev_id): scores and
`unscorable` under the version that gave them, `not_found` and `deleted` (facts about
the revision) under none. Each model has one trusted version: the one its latest fresh answer
carried, kept in the file so that every process sharing it agrees. When Lift Wing
serves a new version, the first fresh answer that says so makes the older entries of
that model (only) untrusted.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from lwbatch.errors import InputError, UsageError
from lwbatch.io.arrays import array
from lwbatch.results import ErrorType, Score

FORMAT = 1
# How long a write waits for another process's write to finish. Writes run in a
# worker thread, so the wait holds back that answer's bookkeeping, not the run.
BUSY_TIMEOUT = 30.0


def _trusted(model: str) -> str:
    """SQL for the version `model`'s scores must carry to be used: its latest fresh
    answer's."""
    return f"coalesce((SELECT v.version FROM versions v WHERE v.model = {model}), '')"


def _used(model: str) -> str:
    """SQL for whether an entry of `answers` is used: a score of the trusted version,
    or a final error (kept under no version)."""
    return (
        f"(answers.version = {_trusted(model)} "
        "OR (answers.version = '' AND answers.error IS NOT NULL))"
    )


# Answers that do not change on asking again; anything else is asked again next time.
# These are facts about the revision, kept whichever version said them.
FINAL_ERRORS = frozenset({ErrorType.NOT_FOUND, ErrorType.DELETED})
# Final for a model version: another version may score the revision.
VERSIONED_ERRORS = frozenset({ErrorType.UNSCORABLE})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    model TEXT PRIMARY KEY, version TEXT NOT NULL, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    model TEXT NOT NULL, version TEXT NOT NULL, wiki TEXT NOT NULL, rev_id INTEGER NOT NULL,
    prediction TEXT, probability TEXT, error TEXT, message TEXT, stored REAL NOT NULL,
    PRIMARY KEY (model, wiki, rev_id, version)) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class ModelEntries:
    model: str
    version: str  # the trusted one ("" until an answer named one)
    trusted: int  # entries of that version
    stale: int  # entries of older versions, never used again


class SqliteScoreCache:
    """A :class:`~lwbatch.seams.ScoreCache` in one SQLite file (created if missing).

    Two connections: lookups read through one, answers are written through the other
    (from worker threads), so a lookup never waits while a write waits for another
    process's lock. `read_only` opens an existing file for reading alone (``plan``,
    ``cache stats``, ``cache export``), which also works on a file one may not write.
    `busy_timeout`: seconds a write waits for another process's write to end.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        must_exist: bool = False,
        read_only: bool = False,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._busy_timeout = busy_timeout
        if self.path.is_dir():
            raise self._error("is a directory; give a file for the cache")
        if (must_exist or read_only) and not self.path.is_file():
            raise self._error("no such file")
        if not self.path.parent.is_dir():
            raise self._error(f"no such folder: {self.path.parent}")
        wanted = os.R_OK if read_only else os.R_OK | os.W_OK
        if self.path.exists() and not os.access(self.path, wanted):
            # SQLite would call a file it may not write "readonly database" at the first
            # write, after requests were paid for.
            raise self._error(
                "cannot read it (permission denied)"
                if read_only
                else "cannot read and write it (permission denied); `lwbatch cache` and "
                "`plan` can read it"
            )
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._empty = False  # a read-only look at a file that holds no cache yet
        try:
            if not read_only:
                self._writer = self._connect(self.path)
                self._create(self._writer)
            self._reader = self._connect(
                f"file:{self.path.resolve()}?mode=ro" if read_only else self.path,
                uri=read_only,
            )
            self._check(self._reader)
        except _NewerFormat as exc:
            self.close()
            raise self._error(str(exc)) from None
        except sqlite3.OperationalError as exc:
            self.close()
            raise self._error(f"cannot open it ({exc})") from None
        except sqlite3.DatabaseError as exc:
            self.close()
            raise self._error(f"not an lwbatch score cache, or damaged ({exc})") from None

    def _connect(self, target: Path | str, *, uri: bool = False) -> sqlite3.Connection:
        return sqlite3.connect(
            target,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=uri,
        )

    @property
    def writing(self) -> bool:
        """Whether a write is under way (or waiting for another process's)."""
        return self._write_lock.locked()

    @staticmethod
    def _tables(db: sqlite3.Connection) -> set[str]:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _create(self, db: sqlite3.Connection) -> None:
        tables = self._tables(db)
        if tables and "meta" not in tables:
            raise sqlite3.DatabaseError("it has tables of its own")
        db.execute("PRAGMA journal_mode = WAL")
        if not tables:
            # A new file, or an empty one (which any run would also take as a new cache).
            # The format row in the same transaction: a process opening the file at the
            # same moment sees both or neither.
            db.executescript(
                "BEGIN IMMEDIATE;"
                + _SCHEMA
                + f"INSERT OR IGNORE INTO meta VALUES ('format', '{FORMAT}');COMMIT;"
            )
        # A committed answer survives a crash of this process (not of the machine's
        # power, which costs a request again, not a wrong answer).
        db.execute("PRAGMA synchronous = NORMAL")

    def _check(self, db: sqlite3.Connection) -> None:
        tables = self._tables(db)
        if not tables and self.read_only:
            self._empty = True
            return
        if "meta" not in tables:
            raise sqlite3.DatabaseError("it has tables of its own")
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        found = int(row[0]) if row and str(row[0]).isdigit() else None
        if found is None:
            raise sqlite3.DatabaseError("its format is unreadable")
        if found > FORMAT:
            raise _NewerFormat(found)
        # A damaged page deep in the file would otherwise show only when a lookup
        # reaches it, or not at all: a run would quietly ask again what it holds.
        problems = [r[0] for r in db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems))

    def _error(self, reason: str) -> InputError:
        return InputError(reason, path=self.path)

    # -- the ScoreCache seam -------------------------------------------------------
    def get(self, model: str, wiki: str, rev_id: int) -> Score | None:
        return self._get(model, wiki, rev_id, before=None)

    def as_of(self, when: float) -> CacheAsOf:
        """This cache as it was at wall-clock time `when`: answers stored since (by the
        run that is going on, say) are not in it."""
        return CacheAsOf(self, when)

    def _get(self, model: str, wiki: str, rev_id: int, *, before: float | None) -> Score | None:
        if self._empty:
            return None
        since = "" if before is None else "AND stored < ? "
        try:
            with self._read_lock:
                row = self._reader.execute(
                    "SELECT version, prediction, probability, error, message FROM answers "
                    f"WHERE model = ? AND wiki = ? AND rev_id = ? AND {_used('?')} {since}"
                    "ORDER BY stored DESC LIMIT 1",
                    (model, wiki, rev_id, model, *(() if before is None else (before,))),
                ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._error(f"cannot read it ({exc})") from None
        if row is None:
            return None
        version, prediction, probability, error, message = row
        try:
            return Score(
                prediction=None if prediction is None else orjson.loads(prediction),
                probability=None if probability is None else orjson.loads(probability),
                # An error answer carries no version; a score, the version it was kept under.
                model_version=None if error is not None else version or None,
                error=None if error is None else ErrorType(error),
                error_message=message,
            )
        except ValueError as exc:  # JSON or an error type another program wrote
            raise self._damaged(model, f"{wiki} {rev_id}", exc) from None

    def put(self, model: str, answers: Sequence[tuple[str, int, Score]]) -> None:
        now = time.time()
        kept = [
            (wiki, rev_id, score)
            for wiki, rev_id, score in answers
            if score.cacheable
            and (score.error is None or score.error in FINAL_ERRORS | VERSIONED_ERRORS)
        ]
        if not kept:
            return
        db = self._writable()
        # The version these answers came from: a batch's scores all carry the same one.
        newest = next((s.model_version for _, _, s in kept if s.model_version), None)
        try:
            with self._write_lock, _Transaction(db):
                # Read inside the write transaction: another process may have moved on.
                row = db.execute(
                    "SELECT version FROM versions WHERE model = ?", (model,)
                ).fetchone()
                trusted = "" if row is None else str(row[0])
                if newest and newest != trusted:
                    db.execute(
                        "INSERT OR REPLACE INTO versions VALUES (?, ?, ?)", (model, newest, now)
                    )
                    trusted = newest
                db.executemany(
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        _row(model, trusted, wiki, rev_id, score, now)
                        for wiki, rev_id, score in kept
                        # Before any answer named a version, there is none to keep it under.
                        if trusted or score.error not in VERSIONED_ERRORS
                    ],
                )
        except sqlite3.DatabaseError as exc:
            raise self._error(f"cannot write it ({exc})") from None

    def close(self) -> None:
        for lock, db in (
            (self._write_lock, self._writer),
            (self._read_lock, getattr(self, "_reader", None)),
        ):
            if db is not None:
                with lock:
                    db.close()

    # -- maintenance ---------------------------------------------------------------
    def models(self) -> list[ModelEntries]:
        if self._empty:
            return []
        try:
            with self._read_lock:
                counts = self._reader.execute(
                    f"SELECT model, {_trusted('answers.model')}, {_used('answers.model')}, "
                    "count(*) FROM answers GROUP BY 1, 2, 3"
                ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._error(f"cannot read it ({exc})") from None
        out = []
        for model in sorted({m for m, _, _, _ in counts}):
            mine = [(v, used, n) for m, v, used, n in counts if m == model]
            out.append(
                ModelEntries(
                    model,
                    mine[0][0],
                    sum(n for _, used, n in mine if used),
                    sum(n for _, used, n in mine if not used),
                )
            )
        return out

    def prune(self, *, model: str | None = None) -> int:
        """Remove the entries no run will use again (older versions), or every entry
        of `model`; the number removed."""
        db = self._writable()
        try:
            with self._write_lock:
                with _Transaction(db):
                    if model is not None:
                        cursor = db.execute("DELETE FROM answers WHERE model = ?", (model,))
                        db.execute("DELETE FROM versions WHERE model = ?", (model,))
                    else:
                        cursor = db.execute(
                            f"DELETE FROM answers WHERE NOT {_used('answers.model')}"
                        )
                db.execute("VACUUM")
        except sqlite3.DatabaseError as exc:
            raise self._error(f"cannot prune it ({exc})") from None
        return int(cursor.rowcount)

    def export(
        self, *, trusted_only: bool = True, rows_per_batch: int = 65536
    ) -> Iterator[pa.RecordBatch]:
        """The entries as Arrow batches (model, model_version, wiki, rev_id, prediction
        as JSON text, probability, error, error_message)."""
        if self._empty:
            return
        query = (
            "SELECT model, version, wiki, rev_id, prediction, probability, error, message "
            "FROM answers"
        )
        if trusted_only:
            query += f" WHERE {_used('answers.model')}"
        try:
            with self._read_lock:
                cursor = self._reader.execute(query + " ORDER BY model, wiki, rev_id")
                while rows := cursor.fetchmany(rows_per_batch):
                    try:
                        columns = _columns(rows)
                    except (ValueError, TypeError, AttributeError) as exc:
                        raise self._damaged(rows[0][0], "exported rows", exc) from None
                    yield pa.record_batch(columns, schema=EXPORT_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise self._error(f"cannot read it ({exc})") from None

    def answer_lines(
        self, models: Collection[str], *, rows_per_batch: int = 65536
    ) -> Iterator[list[tuple[str, str, int, str]]]:
        """The answers `models` would take from here, as (model, wiki, rev_id, the
        answer as a journal line), in batches: what another engine's workers read. The
        newest entry of each key, as get() takes it; built by SQLite, not row by row."""
        if self._empty or not models:
            return
        marks = ", ".join("?" * len(models))
        # The journal's line (lwbatch/durability/answer_log.py): model, key, prediction,
        # probability, version (none for an error), error, message, latency, attempts.
        line = (
            "json_array(model, json_array(wiki, rev_id), json(prediction), "
            "json(probability), CASE WHEN error IS NULL THEN nullif(version, '') END, "
            "error, message, NULL, NULL)"
        )
        query = (
            f"SELECT model, wiki, rev_id, {line} FROM answers "
            f"WHERE model IN ({marks}) AND {_used('answers.model')} "
            "ORDER BY model, wiki, rev_id, stored DESC"
        )
        last: tuple[str, str, int] | None = None
        try:
            with self._read_lock:
                cursor = self._reader.execute(query, tuple(models))
            while True:
                with self._read_lock:  # not held while the caller works on a batch
                    rows = cursor.fetchmany(rows_per_batch)
                if not rows:
                    return
                batch = []
                for model, wiki, rev_id, text in rows:
                    if (model, wiki, rev_id) != last:
                        last = (model, wiki, rev_id)
                        batch.append((model, wiki, rev_id, text))
                yield batch
        except sqlite3.DatabaseError as exc:
            raise self._error(f"cannot read it ({exc})") from None

    def _damaged(self, model: str, where: str, exc: Exception) -> InputError:
        return self._error(
            f"a damaged entry of {model} ({where}: {exc}); prune that model's entries "
            "from the cache, or give another cache"
        )

    def _writable(self) -> sqlite3.Connection:
        if self._writer is None:
            raise UsageError(f"{self.path}: the score cache was opened read-only")
        return self._writer

    def __repr__(self) -> str:
        return f"SqliteScoreCache({str(self.path)!r})"


def _row(
    model: str, trusted: str, wiki: str, rev_id: int, score: Score, now: float
) -> tuple[Any, ...]:
    # A fact about the revision, whichever version said it, is kept under no version: it
    # stays in use when the model's version changes. The rest, under the version.
    if score.error in FINAL_ERRORS:
        version = ""
    elif score.error is not None:
        version = trusted
    else:
        version = score.model_version or trusted
    return (
        model,
        version,
        wiki,
        rev_id,
        None if score.prediction is None else orjson.dumps(score.prediction).decode(),
        None if score.probability is None else orjson.dumps(score.probability).decode(),
        None if score.error is None else score.error.value,
        score.error_message,
        now,
    )


EXPORT_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("wiki", pa.string()),
        ("rev_id", pa.int64()),
        ("prediction", pa.string()),
        ("probability", pa.map_(pa.string(), pa.float64())),
        ("error", pa.string()),
        ("error_message", pa.string()),
    ]
)


def _columns(rows: list[tuple[Any, ...]]) -> list[pa.Array]:
    model, version, wiki, rev_id, prediction, probability, error, message = zip(*rows, strict=True)
    return [
        array(model, pa.string()),
        array([v or None for v in version], pa.string()),
        array(wiki, pa.string()),
        array(rev_id, pa.int64()),
        array(prediction, pa.string()),
        array(
            [None if p is None else list(orjson.loads(p).items()) for p in probability],
            pa.map_(pa.string(), pa.float64()),
        ),
        array(error, pa.string()),
        array(message, pa.string()),
    ]


class CacheAsOf:
    """A read-only look at a score cache as it was at one moment (see `as_of`)."""

    def __init__(self, cache: SqliteScoreCache, when: float) -> None:
        self._cache = cache
        self._when = when

    def get(self, model: str, wiki: str, rev_id: int) -> Score | None:
        return self._cache._get(model, wiki, rev_id, before=self._when)

    def put(self, model: str, answers: Sequence[tuple[str, int, Score]]) -> None:
        raise UsageError("a cache as of an earlier moment is read-only")

    def close(self) -> None:
        return None


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error:
                # A failed COMMIT (disk full) leaves the transaction open: end it, or
                # every later write here fails and other processes wait on its lock.
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


class _NewerFormat(sqlite3.DatabaseError):
    def __init__(self, found: int) -> None:
        super().__init__(
            f"written by a newer lwbatch (cache format {found}; this one reads {FORMAT}): "
            "upgrade lwbatch, or give another cache"
        )


def open_cache(cache: Path | str | None) -> SqliteScoreCache | None:
    return None if cache is None else SqliteScoreCache(cache)


__all__ = [
    "EXPORT_SCHEMA",
    "FINAL_ERRORS",
    "VERSIONED_ERRORS",
    "ModelEntries",
    "SqliteScoreCache",
    "open_cache",
]
