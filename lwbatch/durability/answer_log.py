"""A journal's answer log: one JSON line per (model, key) answer, appended as each
arrives (one write(2), no buffering in the process) before its row counts as done, so
a killed process loses no answer the log was given (a job holds those that arrive
during a segment's commit until it ends: lwbatch/durability/commits.py). At every segment the
log is rotated: a fresh file holds only the answers of rows still open."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import orjson

from lwbatch.durability.atomic import fsync_dir
from lwbatch.durability.disk import Disk
from lwbatch.engine.resume import RETRYABLE, WIKI_WIDE, ResumeState
from lwbatch.keys import RowKey, key_from_json, key_to_json
from lwbatch.results import ErrorType, Score

Answer = tuple[str, RowKey, Score]


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


def decode_answer(line: bytes) -> Answer | None:
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


class AnswerLog:
    """The ``answers-NNNNNN.log`` files of one journal directory."""

    def __init__(self, directory: Path, disk: Disk) -> None:
        self._dir = directory
        self._disk = disk
        self._seq = 0
        self.fd: int | None = None

    def _paths(self) -> list[Path]:
        return sorted(self._dir.glob("answers-*.log"))

    def lines(self) -> Iterable[Answer]:
        """Every readable answer kept, in the order they came."""
        for path in self._paths():
            self._seq = max(self._seq, int(path.stem.split("-")[1]))
            for line in path.read_bytes().splitlines():
                answer = decode_answer(line)
                if answer is not None:
                    yield answer

    def load(self, state: ResumeState, models: list[str], *, retry_failed: bool) -> None:
        """Into `state`, the answers of rows no segment holds (failures of the service
        left out, to be asked again, with `retry_failed`)."""
        for model, key, score in self.lines():
            if key in state.done or model not in models:
                continue
            if retry_failed and score.error is not None and score.error.value in RETRYABLE:
                state.retried += 1
                continue
            if score.error in WIKI_WIDE:
                state.refused.add((model, key.wiki, score.error))
            state.partial.setdefault(key, {})[model] = score

    def holds_answers(self) -> bool:
        """Whether an answer that cost a request is kept (a refusal of a whole wiki
        cost none worth resuming)."""
        return any(score.error not in WIKI_WIDE for _, _, score in self.lines())

    def record(self, model: str, answers: Iterable[tuple[RowKey, Score]]) -> None:
        assert self.fd is not None
        self._disk.append(self.fd, b"".join(encode_answer(model, k, s) for k, s in answers))

    def rotate(self, keep: Iterable[Answer]) -> None:
        """Start a fresh log holding `keep` (fsynced), then drop the older ones."""
        old = self._paths()
        self._seq += 1
        path = self._dir / f"answers-{self._seq:06d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._disk.append(fd, b"".join(encode_answer(m, k, s) for m, k, s in keep))
            os.fsync(fd)
            fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            raise
        self.close()
        self.fd = fd
        for stale in old:
            if stale != path:
                stale.unlink(missing_ok=True)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


__all__ = ["AnswerLog", "decode_answer", "encode_answer"]
