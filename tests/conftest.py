"""Fixtures and helpers every test module shares (test modules never import each other)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Endpoint, RunReport, Scorer, Source, score_file_async
from lwbatch.protocol.catalog import default_catalog
from lwbatch.results import Revision
from lwbatch.settings import Connection, Hooks
from lwbatch.testing.emulator import Emulator, EmulatorConfig, running

EmulatorFactory = Callable[..., AbstractContextManager[tuple[Emulator, str]]]


class FakeClock:
    """A clock that only moves when someone sleeps on it; `lateness` delays wake-ups."""

    def __init__(self, lateness: Callable[[], float] | None = None) -> None:
        self.now = 1000.0
        self.lateness = lateness or (lambda: 0.0)
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        step = max(seconds, 0.0) + self.lateness()
        self.now += step
        self.slept += step
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Shared budgets of a test (and of the processes it starts) live in a folder of
    its own, never in the user's cache."""
    folder = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("LWBATCH_STATE_DIR", str(folder))
    return folder


@pytest.fixture
def gc_enabled() -> Iterator[None]:
    """Automatic garbage collection on for the test, as it was afterwards."""
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator() -> EmulatorFactory:
    """`with emulator(error_rate=0.05) as (emu, base_url): ...` on 127.0.0.1."""

    def start(**options: object) -> AbstractContextManager[tuple[Emulator, str]]:
        return running(EmulatorConfig(**options))  # type: ignore[arg-type]

    return start


@pytest.fixture
def running_emulator() -> Iterator[tuple[Emulator, str]]:
    with running(EmulatorConfig()) as pair:
        yield pair


def write_parquet(path: Path, columns: dict[str, pa.Array | list[object]]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def revs_parquet(tmp_path: Path) -> Path:
    """10 distinct revisions (+2 duplicates, 1 unknown) with a lang column."""
    ids = [101, 102, 103, 104, 105, 106, 107, 108, 109, 2_100_000_001, 101, 105]
    langs = ["en", "en", "de", "en", "en", "de", "en", "en", "en", "en", "en", "en"]
    return write_parquet(
        tmp_path / "revs.parquet", {"rev_id": pa.array(ids, pa.int64()), "lang": langs}
    )


def kill_after_requests(args: list[str], env: dict[str, str], emu: Emulator, count: int) -> None:
    """Run `args`, SIGKILL it once the emulator has seen `count` requests, wait for it."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while emu.stats.requests < count:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)  # polling the emulator's count, not waiting a fixed time
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)


def max_in_window(times: list[float], period: float) -> int:
    """Most of the sorted `times` in any half-open window [t, t + period)."""
    return max(bisect_left(times, t + period) - i for i, t in enumerate(times))


# -- what the emulator answers, derived here rather than asked of it -----------------
def emulated_unit(model: str, rev_id: int, salt: int = 0, *, wiki: str = "") -> float:
    """The emulator's deterministic number in [0, 1) for (model, wiki, rev_id), re-derived.

    `wiki`: for a model that takes a lang, the database name of the wiki that lang names
    (enwiki, zh_yuewiki); empty for the others, whose name already says their wiki.

    The rule, as lwbatch/testing/emulator.py states it: the key is the model name, or
    "model@wiki"; a 64-bit seed made of the CRC-32 of the key in the high half, XOR the
    rev_id, XOR salt times the golden-ratio constant; then SplitMix64 (Steele, Lea and
    Flood 2014: one increment by the golden ratio and the MurmurHash3-style finaliser);
    the top 53 bits as a fraction.
    """
    key = f"{model}@{wiki}" if wiki else model
    golden = 0x9E3779B97F4A7C15
    bits = 2**64
    state = ((zlib.crc32(key.encode("utf-8")) * 2**32) ^ rev_id ^ (salt * golden)) % bits
    z = (state + golden) % bits
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % bits
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % bits
    z ^= z >> 31
    return (z >> 11) / 2**53


def emulated_p_true(model: str, rev_id: int, *, wiki: str = "") -> float:
    """P(true) the emulator gives a binary model (damaging, goodfaith, reverted,
    revertrisk): the unit number to 4 decimals; the prediction is `p > 0.5`. `wiki` as
    for :func:`emulated_unit`."""
    return round(emulated_unit(model, rev_id, wiki=wiki), 4)


# -- a scripted transport for Scorer tests -------------------------------------------
_EMULATOR = Emulator()


def ok(request: httpx.Request) -> httpx.Response:
    """The emulator's answer (single or batch) for the request's model and body, without
    a gateway or faults: a 200 for every revision the emulator knows."""
    model = request.url.path.split("/")[-1].removesuffix(":predict")
    answer = _EMULATOR.reply(default_catalog().resolve(model), orjson.loads(request.content))
    return httpx.Response(answer.status, json=answer.body)


class Script:
    """A transport that answers from a function and records every request."""

    def __init__(
        self, answer: Callable[[httpx.Request, int], httpx.Response], clock: FakeClock
    ) -> None:
        self.answer = answer
        self.clock = clock
        self.requests: list[tuple[float, httpx.Request]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((self.clock(), request))
        return self.answer(request, len(self.requests))

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


# -- a library run that a Ctrl-C stops ----------------------------------------------------
async def score_until(
    inp: Path,
    out: Path,
    base_url: str,
    *,
    stop_after: int | None = None,
    connection: Connection | None = None,
    hooks: Hooks | None = None,
    **options: Any,
) -> RunReport:
    """score_file_async against `base_url` (with the rest of `connection`), stopped (as by
    Ctrl-C, with a 5 s grace) once `stop_after` rows are out; `hooks` are called too, and
    the rest of `options` go to score_file_async."""
    scorers: list[Scorer] = []
    stoppers: list[asyncio.Task[None]] = []

    given = hooks or Hooks()

    def started(source: Source, scorer: Scorer) -> None:
        scorers.append(scorer)
        if given.on_start is not None:
            given.on_start(source, scorer)

    def progress(n: int) -> None:
        scorer = scorers[0]
        if stop_after is not None and scorer.rows_emitted >= stop_after and not stoppers:
            stoppers.append(asyncio.get_running_loop().create_task(scorer.stop(5.0)))
        if given.progress is not None:
            given.progress(n)

    endpoint = Endpoint(base_url=base_url)
    return await score_file_async(
        inp,
        out,
        connection=replace(connection, endpoint=endpoint)
        if connection
        else Connection(endpoint=endpoint),
        hooks=replace(given, on_start=started, progress=progress),
        **options,
    )


# -- revisions -------------------------------------------------------------------------
def rev(rev_id: int, lang: str = "en", *, keyed: bool = False) -> Revision:
    """A Wikipedia revision by language; `keyed`: its key holds the language, as for rows
    of an input with a lang column."""
    return Revision.in_lang(rev_id, lang, keyed=keyed)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local SparkSession for every Spark test of a worker (they share one worker:
    xdist_group "spark"). local[2,2]: two cores, and a failed task is tried once more,
    as on a cluster."""
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2,2]")
        .appName("lwbatch-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("warehouse")))
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    yield session
    session.stop()
