"""What every file sink checks before a request is sent, and how it writes: to a hidden
temporary file beside the output, published in one step at commit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from lwbatch.durability.atomic import publish, temporary_name
from lwbatch.errors import OutputError, describe


def check_destination(path: Path, example: str) -> None:
    """Refuse an output that cannot be written (`example`: a file name to suggest)."""
    if not path.parent.is_dir():
        raise OutputError("its directory does not exist", path=path)
    if path.is_dir():
        raise OutputError(f"is a directory; give a file name such as {example}", path=path)
    if not os.access(path.parent, os.W_OK):
        raise OutputError("its directory is not writable", path=path)


class TextFile:
    """Bytes appended to a temporary file; :meth:`publish` moves it to `path`. With
    `keep_open=False` the file is closed after each write (for sinks with many)."""

    def __init__(self, path: Path, temp: Path | None = None, *, keep_open: bool = True) -> None:
        self.path = path
        self.temp = temp or temporary_name(path)
        self._keep_open = keep_open
        self._started = False
        self._fh: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        try:
            if self._fh is None:
                self._fh = open(self.temp, "ab" if self._started else "wb")
                self._started = True
            self._fh.write(data)
            if not self._keep_open:
                self.close()
        except OSError as exc:
            self.discard()
            raise OutputError(f"cannot be written ({describe(exc)})", path=self.path) from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def publish(self) -> None:
        try:
            if self._fh is None:
                self._fh = open(self.temp, "wb")
            self.close()
            publish(self.temp, self.path)
        except OSError as exc:
            self.discard()
            raise OutputError(f"cannot be committed ({describe(exc)})", path=self.path) from None

    def discard(self) -> None:
        try:
            self.close()
        except OSError:
            pass
        self.temp.unlink(missing_ok=True)
