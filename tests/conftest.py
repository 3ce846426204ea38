from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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
