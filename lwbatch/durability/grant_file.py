"""A journal's grant file, ``ledger.f64``: the wall-clock times of this output's recent
requests, as doubles (a negative time: one the shared budget's file holds too; see
lwbatch/durability/grants.py), so that a restarted run still keeps its budget. Only the
last `keep` times matter; the file is cut down to them at every segment."""

from __future__ import annotations

import os
from array import array
from pathlib import Path

from lwbatch.durability.disk import Disk


class GrantFile:
    def __init__(self, path: Path, disk: Disk, *, keep: int) -> None:
        self._path = path
        self._disk = disk
        self._keep = keep
        self.fd: int | None = None

    def _times(self) -> array[float]:
        data = self._path.read_bytes()
        times = array("d")
        times.frombytes(data[: len(data) - len(data) % 8])  # a torn last write
        return times

    def load(self) -> list[float]:
        """The last `keep` times kept."""
        if not self._keep or not self._path.exists():
            return []
        return list(self._times()[-self._keep :])

    def open(self) -> None:
        self.fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, wall_time: float) -> None:
        assert self.fd is not None
        self._disk.append(self.fd, array("d", [wall_time]).tobytes())

    def compact(self) -> None:
        if self._keep and self._path.stat().st_size > 16 * self._keep:
            self._disk.write_atomic(self._path, self._times()[-self._keep :].tobytes())
            self.close()
            self.fd = os.open(self._path, os.O_WRONLY | os.O_APPEND, 0o600)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


__all__ = ["GrantFile"]
