"""The `lwbatch` command line: the only layer that knows argv, flags, signals and exits.

This module imports nothing heavy: the signal handlers are in place before pyarrow,
aiohttp and the commands are imported (lwbatch/cli/app.py), so a Ctrl-C at any moment
gives one line and exit 130, and a SIGTERM exit 143.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from lwbatch.cli import stops


def _run(argv: list[str] | None, *, own_process: bool) -> int:
    try:
        if own_process:
            from lwbatch.cli.streams import make_forgiving

            make_forgiving()
            if "pyarrow" not in sys.modules:
                # Arrow's default allocator (mimalloc) keeps what lwbatch's many small
                # batches freed: +30-40 MB of RSS per run, measured; the C library's
                # gives it back. An explicit choice of the user's wins.
                os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
            _one_malloc_arena()
            # A worker thread running Python (building a segment's arrays, the
            # estimate) keeps the GIL for the whole switch interval while the event
            # loop waits for it: at the default 5 ms a task step waited 10-12 ms
            # (benchmarks/first_request.py); at 1 ms the longest was 5-7 ms.
            sys.setswitchinterval(0.001)
        from lwbatch.cli.app import main as command

        return command(argv)
    except KeyboardInterrupt:
        if sys.stderr is not None:
            sys.stderr.write(f"lwbatch: {stops.message()}\n")
        return stops.exit_code()


def _one_malloc_arena() -> None:
    """glibc gives each thread that allocates its own arena and keeps what was freed
    in it: the worker threads that build Arrow arrays held 20+ MB that way (measured).
    Their work is mostly under the GIL, so sharing one arena's lock costs little. Unless
    the user chose (MALLOC_ARENA_MAX), and only where glibc has mallopt."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return  # not glibc (musl)
    m_arena_max = -8
    mallopt(m_arena_max, 1)


def main(argv: list[str] | None = None) -> int:
    """Run the command in this process; its exit code (signal handlers are restored)."""
    restore = stops.install()
    try:
        return _run(argv, own_process=False)
    finally:
        restore()


def console() -> NoReturn:
    """The `lwbatch` executable: this process is the command's."""
    stops.install()
    code = _run(None, own_process=True)
    stops.leave_on_signal()
    sys.exit(code)


__all__ = ["console", "main"]
