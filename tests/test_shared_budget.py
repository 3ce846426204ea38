"""One budget per identity: limiters that share a ledger file (in one process here, on
virtual time; tests/test_shared_processes.py runs real processes against the emulator)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio
import looptime
import pytest

from lwbatch import Budget, Endpoint, Rate, Token, UsageError
from lwbatch.durability.grants import GrantTimes
from lwbatch.pacing import ledger_file, shared
from lwbatch.pacing.limiter import BudgetLimiter
from lwbatch.pacing.shared import SharedLedger, default_state_dir, identity
from tests.conftest import FakeClock, max_in_window

BUDGET = Budget.from_rate(Rate(300, 3.0))  # 100/s


def in_virtual_time(main: Callable[[], Awaitable[None]]) -> None:
    """Run `main` on a loop whose clock jumps ahead whenever every task waits."""
    loop_factory = partial(looptime.new_event_loop, noop_cycles=2, resolution=1e-9)
    anyio.run(main, backend_options={"loop_factory": loop_factory})


def limiter(
    state: Path, who: str = "me", *, late: float = 0.0, sleeps: list[float] | None = None
) -> BudgetLimiter:
    """A limiter sharing `who`'s budget on the loop's (virtual) clock; `late`: each
    wake-up of its process comes that much late (a busier process); `sleeps` gets
    the time of every sleep it starts (each wake-up costs CPU)."""
    clock = asyncio.get_running_loop().time

    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            # Virtual time's rounding wakes a sleeper a hair early, to sleep the rest:
            # one wake-up, counted once.
            if not sleeps or clock() - sleeps[-1] > 1e-6:
                sleeps.append(clock())
        await asyncio.sleep(seconds + late)

    ledger = SharedLedger.open(BUDGET, who, state_dir=state, clock=clock)
    return BudgetLimiter(BUDGET, clock=clock, sleep=sleep, ledger=ledger)


def on_fake_clock(state: Path, clock: FakeClock) -> BudgetLimiter:
    """A limiter sharing "me"'s budget in `state`, on `clock`."""
    ledger = SharedLedger.open(BUDGET, "me", state_dir=state, clock=clock)
    return BudgetLimiter(BUDGET, clock=clock, sleep=clock.sleep, ledger=ledger)


async def draw(
    limiter: BudgetLimiter, until: float, times: list[float], *, every: float = 0.0
) -> None:
    """Acquire with 4 workers until `until` (virtual s); `every`: a worker's pause after
    each grant (a run that wants less)."""
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        while loop.time() < until:
            await limiter.acquire()
            times.append(loop.time())
            if every:
                await asyncio.sleep(every)

    async with asyncio.TaskGroup() as group:
        for _ in range(4):
            group.create_task(worker())


def test_three_runs_share_one_budget_fairly_even_when_some_wake_late(tmp_path: Path) -> None:
    grants: list[list[float]] = [[], [], []]

    async def main() -> None:
        # Up to 15 ms late at every wake-up: a busy machine's scheduler.
        lanes = [limiter(tmp_path, late=late) for late in (0.0, 0.005, 0.015)]
        start = asyncio.get_running_loop().time()
        async with asyncio.TaskGroup() as group:
            for lane, times in zip(lanes, grants, strict=True):
                group.create_task(draw(lane, start + 60.0, times))
        assert [lane.sharing().others for lane in lanes] == [2, 2, 2]  # type: ignore[union-attr]
        for lane in lanes:
            lane.close()

    in_virtual_time(main)
    every = sorted(t for times in grants for t in times)
    assert max_in_window(every, 3.0) <= 300
    assert len(every) >= 0.95 * 60 * 100
    # Fair within 10%: the run that wakes first does not take the others' turns.
    for times in grants:
        assert abs(len(times) / len(every) - 1 / 3) <= 0.1 / 3, [len(t) for t in grants]


def test_taking_turns_costs_about_one_wake_up_per_grant(tmp_path: Path) -> None:
    grants: list[list[float]] = [[], [], []]
    sleeps: list[list[float]] = [[], [], []]

    async def main() -> None:
        lanes = [
            limiter(tmp_path, late=late, sleeps=asked)
            for late, asked in zip((0.0, 0.0005, 0.001), sleeps, strict=True)
        ]
        start = asyncio.get_running_loop().time()
        async with asyncio.TaskGroup() as group:
            for lane, times in zip(lanes, grants, strict=True):
                group.create_task(draw(lane, start + 10.0, times))
        for lane in lanes:
            lane.close()

    in_virtual_time(main)
    # Each sleeps until its own turn (a wake-up on every other one's turn would be
    # 3 per grant).
    for times, asked in zip(grants, sleeps, strict=True):
        assert len(asked) <= 1.3 * len(times)


def test_a_run_that_wants_little_gets_it_and_the_other_takes_the_rest(tmp_path: Path) -> None:
    light: list[float] = []
    heavy: list[float] = []

    async def main() -> None:
        a, b = limiter(tmp_path), limiter(tmp_path)
        start = asyncio.get_running_loop().time()
        async with asyncio.TaskGroup() as group:
            # 4 workers each pausing 0.2 s: at most 20/s.
            group.create_task(draw(a, start + 30.0, light, every=0.2))
            group.create_task(draw(b, start + 30.0, heavy))
        a.close()
        b.close()

    in_virtual_time(main)
    assert 0.95 * 30 * 20 <= len(light) <= 30 * 20 + 4
    assert len(light) + len(heavy) >= 0.95 * 30 * 100
    assert max_in_window(sorted(light + heavy), 3.0) <= 300


def test_when_a_run_ends_the_other_gets_the_whole_budget_at_once(tmp_path: Path) -> None:
    first: list[float] = []
    second: list[float] = []

    async def main() -> None:
        a, b = limiter(tmp_path), limiter(tmp_path)
        start = asyncio.get_running_loop().time()
        async with asyncio.TaskGroup() as group:
            group.create_task(draw(a, start + 10.0, first))
            group.create_task(draw(b, start + 20.0, second))
        a.close()
        assert b.sharing() == shared.Sharing(
            path=tmp_path / "budget-me.lwb",
            others=1,
            granted=len(second),
            total=len(first + second),
        )
        b.close()

    in_virtual_time(main)
    assert abs(len(first) - sum(t < first[-1] for t in second)) <= 0.1 * len(first)
    alone = [t for t in second if t > first[-1] + 0.1]
    assert len(alone) >= 0.95 * (second[-1] - first[-1]) * 100
    assert max_in_window(sorted(first + second), 3.0) <= 300


def test_runs_of_different_identities_each_get_the_whole_budget(tmp_path: Path) -> None:
    grants: list[list[float]] = [[], []]

    async def main() -> None:
        lanes = [limiter(tmp_path, who="alice"), limiter(tmp_path, who="bob")]
        start = asyncio.get_running_loop().time()
        async with asyncio.TaskGroup() as group:
            for lane, times in zip(lanes, grants, strict=True):
                group.create_task(draw(lane, start + 9.0, times))
        assert [lane.sharing().others for lane in lanes] == [0, 0]  # type: ignore[union-attr]
        for lane in lanes:
            lane.close()

    in_virtual_time(main)
    assert [len(times) >= 0.95 * 900 for times in grants] == [True, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["budget-alice.lwb", "budget-bob.lwb"]


def test_a_restarted_run_counts_what_the_run_before_it_sent(tmp_path: Path) -> None:
    clock = FakeClock()

    async def main() -> tuple[list[float], float]:
        ledger = SharedLedger.open(BUDGET, "me", state_dir=tmp_path, clock=clock)
        before = BudgetLimiter(BUDGET, clock=clock, sleep=clock.sleep, ledger=ledger)
        sent = []
        for _ in range(300):
            await before.acquire()
            sent.append(clock())
        # The process dies here (its ledger is never closed); another one starts.
        again = SharedLedger.open(BUDGET, "me", state_dir=tmp_path, clock=clock)
        after = BudgetLimiter(BUDGET, clock=clock, sleep=clock.sleep, ledger=again)
        await after.acquire()
        waited = clock()
        ledger.close()
        again.close()
        return sent, waited

    sent, next_grant = asyncio.run(main())
    # The whole window was used: the next request waits for the first one's window to end.
    assert next_grant >= sent[0] + 3.0


def test_a_429_pauses_every_run_of_the_identity(tmp_path: Path) -> None:
    clock = FakeClock()

    async def main() -> None:
        a = on_fake_clock(tmp_path, clock)
        b = on_fake_clock(tmp_path, clock)
        await a.acquire()
        paused_at = clock()
        a.pause(30.0)
        await b.acquire()
        assert clock() >= paused_at + 30.0
        a.close()
        b.close()

    asyncio.run(main())


def test_another_budget_for_the_same_identity_is_refused_while_a_run_uses_it(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    first = SharedLedger.open(BUDGET, "me", state_dir=tmp_path, clock=clock)
    other = Budget.from_rate(Rate(100, 3.0))
    with pytest.raises(UsageError) as refused:
        SharedLedger.open(other, "me", state_dir=tmp_path, clock=clock)
    assert str(refused.value) == (
        f"another lwbatch run (pid {__import__('os').getpid()}) shares this identity's request "
        "budget at 300/3s, and this run asks for 100/3s: give it the same `budget`, or "
        "`share_budget=False` to keep a budget of its own (the gateway counts both)"
    )
    limiter = BudgetLimiter(BUDGET, clock=clock, sleep=clock.sleep, ledger=first)

    async def main() -> float:
        for _ in range(100):
            await limiter.acquire()
        started = clock()
        first.close()
        # Nobody uses the old budget any more: the new one takes over, with its grants.
        ledger = SharedLedger.open(other, "me", state_dir=tmp_path, clock=clock)
        after = BudgetLimiter(other, clock=clock, sleep=clock.sleep, ledger=ledger)
        await after.acquire()
        ledger.close()
        return clock() - started

    waited = asyncio.run(main())
    assert waited >= 3.0 - 1.0  # the 100 grants of the last ~1 s fill the new window


def test_a_damaged_ledger_is_replaced_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "budget-me.lwb"
    path.write_bytes(b"not a ledger at all")
    with caplog.at_level(logging.WARNING, logger="lwbatch"):
        ledger = SharedLedger.open(BUDGET, "me", state_dir=tmp_path, clock=FakeClock())
    assert [r.getMessage() for r in caplog.records] == [
        f"budget ledger {path} was not a budget ledger; starting a new one (requests other "
        "runs sent in the last window are not counted)"
    ]
    assert path.stat().st_size == 8 * (16 + 8 + 64 * 8 + 300)
    ledger.close()


def test_after_a_reboot_the_grants_of_the_last_window_still_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = FakeClock()  # uptime 1000 s
    ledger = SharedLedger.open(BUDGET, "me", state_dir=tmp_path, clock=before)
    limiter = BudgetLimiter(BUDGET, clock=before, sleep=before.sleep, ledger=ledger)

    async def fill() -> None:
        for _ in range(300):
            await limiter.acquire()

    asyncio.run(fill())
    ledger.close()
    # A reboot a moment later: a new boot id, and a clock that starts again near 0.
    monkeypatch.setattr(ledger_file, "boot_id", lambda: 12345.0)
    after = FakeClock()
    after.now = 5.0
    ledger = SharedLedger.open(BUDGET, "me", state_dir=tmp_path, clock=after)
    limiter = BudgetLimiter(BUDGET, clock=after, sleep=after.sleep, ledger=ledger)
    asyncio.run(limiter.acquire())
    ledger.close()
    # The window that was full ends ~3 s after the reboot (by the wall clock), not at
    # once and not at uptime 1003.
    assert 5.0 + 3.0 - 0.5 <= after.now <= 5.0 + 3.0 + 0.5


def test_identity_is_a_hash_of_the_client_or_token_or_anonymous_endpoint() -> None:
    public = Endpoint.external()
    emulator = Endpoint(base_url="http://127.0.0.1:8080")

    def jwt(claims: str) -> Token:
        import base64

        body = base64.urlsafe_b64encode(claims.encode()).rstrip(b"=").decode()
        return Token(f"eyJhbGciOiJub25lIn0.{body}.sig")

    one = jwt('{"aud": "app1", "sub": "42", "jti": "a"}')
    same_client = jwt('{"aud": "app1", "sub": "42", "jti": "b"}')
    other_client = jwt('{"aud": "app2", "sub": "42", "jti": "a"}')
    assert identity(public, one) == identity(public, same_client)
    assert identity(public, one) != identity(public, other_client)
    assert identity(public, Token("plain-1")) != identity(public, Token("plain-2"))
    assert identity(public, None) != identity(emulator, None)
    assert identity(public, Token("plain-1")) != identity(public, None)
    # Credentials without a JWT: the client they belong to.
    assert identity(public, Token("opaque-1"), "app1") == identity(
        public, Token("opaque-2"), "app1"
    )
    assert len(identity(public, one)) == 64 and "app1" not in identity(public, one)


def test_the_ledger_holds_no_token(tmp_path: Path) -> None:
    secret = Token("s3cret-token-value")
    who = identity(Endpoint.external(), secret)
    ledger = SharedLedger.open(BUDGET, who, state_dir=tmp_path, clock=FakeClock())
    ledger.close()
    (path,) = tmp_path.iterdir()
    assert path.name == f"budget-{who[:32]}.lwb"
    assert b"s3cret" not in path.read_bytes()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_the_state_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LWBATCH_STATE_DIR", "/srv/lwbatch-state")
    monkeypatch.setenv("XDG_CACHE_HOME", "/srv/cache")
    assert default_state_dir() == Path("/srv/lwbatch-state")
    monkeypatch.delenv("LWBATCH_STATE_DIR")
    assert default_state_dir() == Path("/srv/cache/lwbatch")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the spec: absolute only
    monkeypatch.setenv("HOME", "/home/someone")
    assert default_state_dir() == Path("/home/someone/.cache/lwbatch")


def test_a_state_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError) as refused:
        SharedLedger.open(BUDGET, "me", state_dir=blocker / "state")
    assert str(refused.value) == (
        f"`state_dir` {blocker / 'state'}: a part of the path is a file, not a directory"
    )
    with pytest.raises(UsageError) as refused:
        SharedLedger.open(BUDGET, "me", state_dir=blocker)
    assert str(refused.value) == f"`state_dir` {blocker}: is a file, not a directory"


def test_a_default_state_dir_that_cannot_be_made_names_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("LWBATCH_STATE_DIR", str(blocker))
    with pytest.raises(UsageError) as refused:
        SharedLedger.open(BUDGET, "me")
    assert str(refused.value) == f"LWBATCH_STATE_DIR {blocker}: is a file, not a directory"
    monkeypatch.delenv("LWBATCH_STATE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(UsageError) as refused:
        SharedLedger.open(BUDGET, "me")
    assert str(refused.value) == (
        f"the cache directory {blocker / 'lwbatch'} (from XDG_CACHE_HOME): a part of the "
        "path is a file, not a directory"
    )


def test_an_unlimited_budget_is_never_shared(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to share"):
        SharedLedger.open(Budget.unlimited(), "me", state_dir=tmp_path)
    assert math.isinf(Budget.unlimited().rate)


def test_a_run_that_stops_waking_up_costs_the_others_no_rate(
    tmp_path: Path,
) -> None:
    others: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def never(_seconds: float) -> None:
            await asyncio.Event().wait()  # a process stopped (SIGSTOP) or killed mid-wait

        frozen = BudgetLimiter(
            BUDGET,
            clock=loop.time,
            sleep=never,
            ledger=SharedLedger.open(BUDGET, "me", state_dir=tmp_path, clock=loop.time),
        )
        alive = limiter(tmp_path)
        start = loop.time()
        async with asyncio.TaskGroup() as group:
            await frozen.acquire()  # it got a grant, then waits for the next and never wakes
            stuck = group.create_task(frozen.acquire())
            await draw(alive, start + 13.0, others)
            stuck.cancel()
        frozen.close()
        alive.close()

    in_virtual_time(main)
    assert len(others) >= 0.95 * 100 * 13


def test_a_run_whose_waiter_gives_up_leaves_the_budget_to_the_others_at_once(
    tmp_path: Path,
) -> None:
    others: list[float] = []
    sleeps: list[float] = []
    stopped: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        quitter, alive = limiter(tmp_path), limiter(tmp_path, sleeps=sleeps)
        start = loop.time()
        async with asyncio.TaskGroup() as group:
            group.create_task(draw(alive, start + 2.0, others))
            with anyio.move_on_after(0.5):  # a run stopped: its waiters are cancelled
                while True:
                    await quitter.acquire()
            stopped.append(loop.time())
        quitter.close()
        alive.close()

    in_virtual_time(main)
    # From the last grant before the stop on, one grant per interval (10 ms): none
    # held back by the grace (50 ms) a member that still waits would get.
    after = [t for t in others if t >= stopped[0] - 0.011]
    assert len(after) >= 0.95 * 100 * 1.5
    assert max(b - a for a, b in zip(after, after[1:], strict=False)) <= 0.015
    assert sum(t >= stopped[0] for t in sleeps) <= 1.3 * len(after)


def test_grants_the_ledger_lacks_are_added_to_it_on_resume(tmp_path: Path) -> None:
    clock = FakeClock()

    async def main() -> None:
        first = on_fake_clock(tmp_path, clock)
        sent = []
        for _ in range(150):
            await first.acquire()
            sent.append(clock())
        first.close()
        again = on_fake_clock(tmp_path, clock)
        # Another run of the output kept its budget to itself and sent 150 in the
        # same seconds: with them the window is full.
        again.restore([t + 0.004 for t in sent])
        assert again.ready_at() >= sent[0] + 3.0
        again.close()

    asyncio.run(main())


class Grants:
    """A journal's grant records."""

    def __init__(self) -> None:
        self.recorded: list[float] = []

    def record_grant(self, wall_time: float) -> None:
        self.recorded.append(wall_time)


def test_a_resume_counts_each_earlier_grant_once_whether_it_shares_or_not() -> None:
    # 10.0 and 11.0 were sent sharing (the budget's file holds them); 12.0 and 13.0
    # with a budget of their own; 13.0 was added to the file by an earlier resume.
    ledger = [-10.0, -11.0, 12.0, 13.0, -13.0]
    journal = Grants()
    # The process' clock reads 500 when the wall clock reads 100.
    grants = GrantTimes(journal, shared=True, clock=lambda: 500.0, wall=lambda: 100.0)  # type: ignore[arg-type]
    assert grants.to_restore(ledger) == [412.0]
    assert journal.recorded == [-12.0]  # held from now on: the next resume adds nothing
    assert grants.to_restore([*ledger, *journal.recorded]) == []
    unshared = Grants()
    alone = GrantTimes(unshared, shared=False, clock=lambda: 100.0, wall=lambda: 100.0)  # type: ignore[arg-type]
    assert alone.to_restore(ledger) == [10.0, 11.0, 12.0, 13.0]
    assert unshared.recorded == []


def test_a_grant_is_recorded_at_its_wall_time_signed_by_sharing() -> None:
    for sharing, expected in ((True, [-1700.5]), (False, [1700.5])):
        journal = Grants()
        GrantTimes(journal, shared=sharing, clock=lambda: 3.0, wall=lambda: 1700.5).record(3.0)  # type: ignore[arg-type]
        assert journal.recorded == expected


def test_a_ledger_of_another_budget_or_closed_is_refused_in_words(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = SharedLedger.open(BUDGET, "me", state_dir=tmp_path, clock=clock)
    with pytest.raises(UsageError) as refused:
        BudgetLimiter(Budget.from_rate(Rate(100, 3.0)), clock=clock, ledger=ledger)
    assert str(refused.value) == (
        "`ledger` keeps the budget 300/3s, not 100/3s: open it for the budget it is to keep"
    )
    limiter = BudgetLimiter(BUDGET, clock=clock, sleep=clock.sleep, ledger=ledger)
    asyncio.run(limiter.acquire())
    ledger.close()
    with pytest.raises(RuntimeError) as closed:
        asyncio.run(limiter.acquire())
    assert str(closed.value) == f"the budget ledger {ledger.path} is closed"
    assert limiter.statistics().granted == 1  # still readable


def test_sixty_five_runs_at_once_are_one_too_many(tmp_path: Path) -> None:
    clock = FakeClock()
    members = [SharedLedger.open(BUDGET, "me", state_dir=tmp_path, clock=clock) for _ in range(64)]
    try:
        with pytest.raises(UsageError) as refused:
            SharedLedger.open(BUDGET, "me", state_dir=tmp_path, clock=clock)
        assert str(refused.value) == (
            f"64 lwbatch runs already share the budget in {tmp_path / 'budget-me.lwb'}; "
            "wait for one to end, or give this one `share_budget=False`"
        )
        members.pop().close()
        members.append(SharedLedger.open(BUDGET, "me", state_dir=tmp_path, clock=clock))
    finally:
        for member in members:
            member.close()


CHILD = """
import os, sys, anyio
from lwbatch import Budget, Rate
from lwbatch.pacing.limiter import BudgetLimiter
from lwbatch.pacing.shared import SharedLedger
budget = Budget.from_rate(Rate(300, 3.0))
ledger = SharedLedger.open(budget, "me", state_dir=sys.argv[1])
anyio.run(BudgetLimiter(budget, ledger=ledger).acquire)
if sys.argv[2] == "close":
    ledger.close()
    print("closed", flush=True)
    sys.stdin.read()  # lives on until the test is done with it
else:
    os._exit(0)  # dies without leaving the ledger
"""


def test_runs_that_left_or_died_are_not_counted_as_sharing(tmp_path: Path) -> None:
    def child(how: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    left = child("close")
    try:
        assert left.stdout is not None and left.stdout.readline() == "closed\n"
        died = child("die")
        # Ended but not waited for: a zombie, whose pid still answers.
        os.waitid(os.P_PID, died.pid, os.WEXITED | os.WNOWAIT)
        ledger = SharedLedger.open(BUDGET, "me", state_dir=tmp_path)
        assert ledger.sharing().others == 0
        ledger.close()
        # Nobody uses the budget: another one may take over.
        SharedLedger.open(Budget.from_rate(Rate(100, 3.0)), "me", state_dir=tmp_path).close()
        died.communicate()
    finally:
        left.communicate("")


def test_a_new_run_stamps_its_first_window_late_though_others_used_the_ledger(
    tmp_path: Path,
) -> None:
    budget = Budget.from_rate(Rate(10, 1.0))  # cold start 0.1 s, margin 7.5 ms
    clock = FakeClock()

    async def grants(count: int) -> list[float]:
        ledger = SharedLedger.open(budget, "me", state_dir=tmp_path, clock=clock)
        limiter = BudgetLimiter(budget, clock=clock, sleep=clock.sleep, ledger=ledger)
        times = []
        for _ in range(count):
            await limiter.acquire()
            times.append(clock())
        ledger.close()
        return times

    asyncio.run(grants(30))  # an earlier run, long done
    clock.now += 60.0
    times = asyncio.run(grants(11))
    # Its connections are new: the server may see its first requests up to 0.1 s
    # late, so the 11th waits for the first one's window as the server counts it.
    assert times[10] - times[0] >= 1.0 + 0.0075 + 0.1 - 1e-9


def test_runs_joining_together_stamp_one_window_late_not_one_window_each(
    tmp_path: Path,
) -> None:
    # BUDGET: 300/3s, margin 20 ms, cold start 0.1 s (not loopback).
    times: list[float] = []

    async def main() -> None:
        limiters = [limiter(tmp_path) for _ in range(3)]

        async def run(one: BudgetLimiter) -> None:
            for _ in range(300):
                await one.acquire()
                times.append(asyncio.get_running_loop().time())
            one.close()

        async with anyio.create_task_group() as tg:
            for one in limiters:
                tg.start_soon(run, one)

    in_virtual_time(main)
    times.sort()
    assert len(times) == 900
    # Only the first window's grants open connections: request 301 waits for the
    # first one's window as the server may count it (3.02 s + 0.1 s), and request 601
    # for the 301st's (3.02 s). Each run stamping its first 300 grants late would
    # delay the second and the third window by 0.1 s more each.
    assert times[300] - times[0] == pytest.approx(3.02 + 0.1, abs=1e-6)
    assert times[600] - times[0] == pytest.approx(2 * 3.02 + 0.1, abs=1e-6)
