"""Whether the process behind a member slot of a shared budget still runs: its pid, a
nonce (this process' open ledgers), and its start time, so that a reused pid or a
zombie is told apart. Also this boot's id, which says when a clock started again.
"""

from __future__ import annotations

import os
from pathlib import Path

# Nonces of this process' open ledgers: a member with this pid and another nonce is a
# leftover of an earlier process that had the same pid.
OPEN_NONCES: set[float] = set()


def boot_id() -> float:
    """This boot's id as a float (52 bits), or 0 where the system does not say."""
    try:
        text = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return 0.0
    return float(int(text.replace("-", "")[:13], 16))


def alive(pid: float, nonce: float, since: float) -> bool:
    """Whether process `pid`, which took `nonce` and started at `since`, still runs."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return nonce in OPEN_NONCES
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    # A process that ended but was not waited for yet (a zombie) or a new one with
    # the same pid, where the system says so.
    return started(int(pid)) == since


def started(pid: float) -> float:
    """When process `pid` started (clock ticks since boot), from /proc; -1 for a
    process that has ended (a zombie), 0 where the system does not say."""
    try:
        text = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rfind(")") + 2 :].split()
    if fields[0] == "Z":
        return -1.0
    return float(fields[19])


__all__ = ["OPEN_NONCES", "alive", "boot_id", "started"]
