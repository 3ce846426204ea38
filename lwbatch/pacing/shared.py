"""One request budget for every lwbatch process of an identity on this machine.

The gateway counts requests per token (or per IP when anonymous), not per run: two runs
pacing themselves to the full budget send twice the budget together. So the limiter's
state (its theoretical arrival time, each window's ring of grant times, a 429's pause)
lives in a file named after the identity's hash, mapped into every process that uses
it and changed only under an exclusive ``flock``: the limits of one process then hold
for all of them, exactly, bursts and all.

A file under ``flock`` rather than SQLite: a grant costs one lock, a few reads and a
write (2 us here) instead of a transaction (60 us); see benchmarks/shared_budget.py.
Grants are taken one at a time when a request leaves, so a killed process holds no
capacity back: what it sent counts, as it does at the gateway, and nothing else.

Fairness: each sharing limiter has a member slot (pid, whether it waits, when it last
got a grant). A free slot goes to the waiting member served least recently; the others
wait `grace` for it to take it, then take it themselves: a slow, stopped or killed
member delays a grant by `grace` at most, and costs no rate (the pacing's tolerance
catches the delay up). Members whose process is gone are passed over at once.

Times are those of the limiter's clock: time.monotonic, one clock for every process of
a boot. The file keeps the boot's id and the wall-clock time of the clock's zero, and
moves its times onto a new boot's clock, so the budget of the hour before a reboot
still counts after it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import mmap
import os
import secrets
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import cast

import anyio
import anyio.to_thread

from lwbatch.config import Budget, Endpoint, Token
from lwbatch.errors import UsageError
from lwbatch.pacing.ledger_file import (
    H_PAUSED,
    H_SLOTS,
    H_TAT,
    H_TOTAL,
    M_GRANTED,
    M_LAST,
    M_NONCE,
    M_PID,
    M_WAITING,
    MEMBERS,
    W_CELLS,
    H,
    M,
    W,
    map_ready,
    member_alive,
    members_at,
    open_locked,
    rings_at,
)
from lwbatch.pacing.liveness import OPEN_NONCES, started
from lwbatch.pacing.state import Doubles

log = logging.getLogger("lwbatch")


# How long a member's liveness check is trusted.
_RECHECK = 0.5
_LOCK_RETRY = 0.0005  # seconds between tries of a lock another process holds


@dataclass(frozen=True, slots=True)
class Sharing:
    """What sharing the budget looked like for one limiter, from joining to leaving."""

    path: Path
    others: int  # other limiters (processes) seen drawing from the budget
    granted: int  # requests this limiter sent
    total: int  # requests every limiter of the identity sent meanwhile

    @property
    def share(self) -> float | None:
        """This limiter's part of the requests sent while it was there."""
        return self.granted / self.total if self.total else None


def default_state_dir() -> Path:
    """``$LWBATCH_STATE_DIR``, else ``$XDG_CACHE_HOME/lwbatch``, else ``~/.cache/lwbatch``."""
    if explicit := os.environ.get("LWBATCH_STATE_DIR"):
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache"
    return base / "lwbatch"


def identity(endpoint: Endpoint, token: Token | None, client_id: str | None = None) -> str:
    """The hash that names whose budget a run draws from.

    The gateway counts per client when the token says which (a JWT's `aud`, with its
    `sub`), so every token of one client shares; else per token; anonymous runs share
    per base URL. Only the hash is ever stored.
    """
    from lwbatch.tokens import TokenClaims

    claims = TokenClaims.of(token) if token is not None else None
    if claims is not None and claims.client_id:
        who = f"client {claims.client_id} user {claims.subject or ''}"
    elif client_id:
        who = f"client {client_id} user "
    elif token is not None:
        who = "token " + token.reveal()
    else:
        who = "anonymous"
    return hashlib.sha256(f"{endpoint.base_url}\n{who}".encode()).hexdigest()


class SharedLedger:
    """The file a limiter shares with the others of its identity; a context manager
    that holds the file's lock. Open with :meth:`open`, hand to
    :class:`~lwbatch.pacing.limiter.BudgetLimiter` as `ledger`, and close when done."""

    def __init__(
        self, fd: int, path: Path, mm: mmap.mmap, budget: Budget, clock: Callable[[], float]
    ) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm
        self._clock = clock
        self._base = memoryview(mm).cast("d")
        self._views: list[memoryview[float]] = []
        cells = cast(Doubles, self._base)
        self._cells = cells
        self._members_at = members_at(len(budget.windows))
        self.budget = budget
        self.interval = 1.0 / budget.rate
        # How long the member whose turn it is has to take a free slot before anyone
        # may: long enough for a busy machine's late wake-ups, and short of the
        # pacing's tolerance, which catches the delay up (so it costs no rate).
        self.grace = min(0.05, budget.tolerance / 2)
        self._nonce = float(secrets.randbits(52))
        self._me = -1
        self._granted = 0
        self._total0 = 0.0
        self._total1: float | None = None
        self._others: set[tuple[float, float]] = set()
        self._scanned = -math.inf
        self._checked: dict[int, tuple[float, float, bool]] = {}
        self._depth = 0
        self._closed = False

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        budget: Budget,
        identity: str,
        *,
        state_dir: Path | str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> SharedLedger:
        """Join the ledger of `identity` (see :func:`identity`) under `state_dir`
        (default: :func:`default_state_dir`), creating it for `budget` if need be.

        `clock` must be one clock for every process that shares (time.monotonic);
        tests pass one fake clock to several ledgers of one process.
        """
        if budget.is_unlimited:
            raise ValueError("an unlimited budget has nothing to share")
        if state_dir is not None and not str(state_dir).strip():
            raise UsageError("`state_dir` is empty: give a directory, or leave it out")
        directory = Path(state_dir) if state_dir is not None else default_state_dir()
        path = directory / f"budget-{identity[:32]}.lwb"
        where = (
            f"`state_dir` {directory}"
            if state_dir is not None
            else f"LWBATCH_STATE_DIR {directory}"
            if os.environ.get("LWBATCH_STATE_DIR")
            else f"the cache directory {directory} (from XDG_CACHE_HOME)"
            if os.environ.get("XDG_CACHE_HOME", "").startswith("/")
            else f"the cache directory {directory} (under the home directory)"
        )
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:
            raise UsageError(f"{where}: is a file, not a directory") from None
        except NotADirectoryError:
            raise UsageError(f"{where}: a part of the path is a file, not a directory") from None
        except OSError as exc:
            raise UsageError(f"{where}: cannot create it ({exc.strerror or exc})") from None
        for _ in range(10):
            fd = open_locked(path, where)
            try:
                mm = map_ready(fd, path, budget, clock)
            except BaseException:
                os.close(fd)
                raise
            if mm is None:  # replaced by a new file: open that one
                os.close(fd)
                continue
            ledger = cls(fd, path, mm, budget, clock)
            try:
                ledger._join()
            except BaseException:
                # The map holds a duplicate of the fd, and with it the lock.
                ledger._base.release()
                mm.close()
                os.close(fd)
                raise
            fcntl.flock(fd, fcntl.LOCK_UN)
            return ledger
        raise UsageError(f"{where}: {path.name} keeps being replaced")

    @classmethod
    async def open_async(
        cls, budget: Budget, identity: str, *, state_dir: Path | str | None = None
    ) -> SharedLedger:
        """:meth:`open` in a worker thread: it may wait for another process' lock, or
        make a file, never on the event loop."""
        return await anyio.to_thread.run_sync(
            partial(cls.open, budget, identity, state_dir=state_dir)
        )

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread, shielded (it runs in clean-up); a failure
        to write the file is a warning, never in place of the run's own outcome."""
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self.close)
            except OSError as exc:
                log.warning("budget ledger %s: %s", self.path, exc)

    def _join(self) -> None:
        cells, now = self._cells, self._clock()
        free = -1
        for slot in range(MEMBERS):
            at = self._members_at + slot * M
            if not member_alive(cells, at):
                free = slot
                break
        if free < 0:
            raise UsageError(
                f"{MEMBERS} lwbatch runs already share the budget in {self.path}; "
                "wait for one to end, or give this one `share_budget=False`"
            )
        at = self._members_at + free * M
        since = started(os.getpid())
        cells[at : at + M] = array("d", [os.getpid(), self._nonce, since, 0, 0, 0, 0, 0])
        cells[H_SLOTS] = max(cells[H_SLOTS], free + 1)
        self._me = at
        self._total0 = cells[H_TOTAL]
        OPEN_NONCES.add(self._nonce)
        self._scan(now)

    shared = True

    # -- the lock --------------------------------------------------------------------
    def __enter__(self) -> SharedLedger:
        if self._closed:
            raise RuntimeError(f"the budget ledger {self.path} is closed")
        if not self._depth:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._depth += 1
        return self

    async def lock(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Take the lock without blocking the event loop: another process holds it for
        microseconds, unless it was stopped (Ctrl-Z) right then."""
        while True:
            if self._closed:
                raise RuntimeError(f"the budget ledger {self.path} is closed")
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await sleep(_LOCK_RETRY)
        self._depth = 1

    @property
    def closed(self) -> bool:
        return self._closed

    def unlock(self) -> None:
        self._depth = 0
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if not self._depth:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    # -- what the limiter keeps here -------------------------------------------------
    def limiter_cells(self) -> Doubles:
        """The limiter's theoretical arrival time and pause."""
        return self._view(H_TAT, H_PAUSED + 1)

    def window_views(self) -> list[tuple[Doubles, Doubles]]:
        """Per window of the budget, its ring of grant times and its cells."""
        views = []
        ring_at = rings_at(len(self.budget.windows))
        for index, window in enumerate(self.budget.windows):
            at = H + index * W + W_CELLS
            views.append((self._view(ring_at, ring_at + window.requests), self._view(at, at + 2)))
            ring_at += window.requests
        return views

    def _view(self, start: int, stop: int) -> Doubles:
        view = self._base[start:stop]
        self._views.append(view)
        return cast(Doubles, view)

    # -- taking turns (called with the lock held) --------------------------------------
    def ahead(self, now: float, ready: float) -> int:
        """How many waiting members take the slot free since `ready`, and those after
        it, before this one: 0 when it is this member's turn."""
        if now - ready >= self.grace:
            return 0
        cells, me = self._cells, self._me
        mine = cells[me + M_LAST]
        found = 0
        for slot in range(int(cells[H_SLOTS])):
            at = self._members_at + slot * M
            if (
                at != me
                and cells[at + M_WAITING]
                and cells[at + M_LAST] < mine
                and self._live(slot, now)
            ):
                found += 1
        return found

    def turn_wait(self, now: float, ready: float, ahead: int) -> float:
        """How long to sleep with `ahead` members before this one: until its turn (a
        slot per interval for each), or until the slot is anyone's, if sooner."""
        free_in = max(ready - now, 0.0)
        if not ahead:
            return free_in
        return min(free_in + ahead * self.interval, ready + self.grace - now)

    def wanting(self) -> None:
        self._cells[self._me + M_WAITING] = 1.0

    def granted(self, now: float, *, more: bool) -> None:
        cells, me = self._cells, self._me
        cells[me + M_LAST] = now
        cells[me + M_GRANTED] += 1
        cells[me + M_WAITING] = 1.0 if more else 0.0
        cells[H_TOTAL] += 1
        self._granted += 1
        if now - self._scanned >= 1.0:
            self._scan(now)

    def idle(self) -> None:
        # Read without the lock: only this member writes its cells.
        if not self._closed and self._cells[self._me + M_WAITING]:
            with self:
                self._cells[self._me + M_WAITING] = 0.0

    def _live(self, slot: int, now: float) -> bool:
        at = self._members_at + slot * M
        nonce = self._cells[at + M_NONCE]
        seen = self._checked.get(slot)
        if seen is None or seen[0] != nonce or now - seen[1] >= _RECHECK:
            seen = (nonce, now, member_alive(self._cells, at))
            self._checked[slot] = seen
        return seen[2]

    def _scan(self, now: float) -> None:
        """Note the other members alive now, for :meth:`sharing`."""
        self._scanned = now
        cells = self._cells
        for slot in range(int(cells[H_SLOTS])):
            at = self._members_at + slot * M
            pid, nonce = cells[at + M_PID], cells[at + M_NONCE]
            if at != self._me and pid and self._live(slot, now):
                self._others.add((pid, nonce))

    # -- leaving -----------------------------------------------------------------------
    def sharing(self) -> Sharing:
        total = self._total1 if self._total1 is not None else self._cells[H_TOTAL]
        return Sharing(
            path=self.path,
            others=len(self._others),
            granted=self._granted,
            total=int(total - self._total0),
        )

    def close(self) -> None:
        """Leave the ledger: this member's slot is freed; its grants keep counting.
        The limiter can still be read (its statistics), but grants no more."""
        if self._closed:
            return
        with self:
            self._scan(self._clock())
            self._total1 = self._cells[H_TOTAL]
            self._cells[self._me : self._me + M] = array("d", [0.0] * M)
        self._closed = True
        OPEN_NONCES.discard(self._nonce)
        # The kernel writes the map back within half a minute anyway; a thread that
        # synced it every few seconds took the GIL from the event loop at times, and
        # a lone run at 300/1s got an occasional 429 from it.
        os.fsync(self._fd)
        # The map stays until the limiter's views of it go (closing it under them
        # would fail); this fd goes now. Neither holds the lock any more.
        os.close(self._fd)

    def __repr__(self) -> str:
        return f"<SharedLedger {self.path}>"
