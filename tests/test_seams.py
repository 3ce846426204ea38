"""The four seams used from outside: each can be replaced without touching the engine."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from lwbatch import (
    Budget,
    Endpoint,
    InvalidRow,
    Rate,
    Revision,
    Scorer,
    UsageError,
)
from lwbatch.durability.journal import FileJournal
from lwbatch.keys import KeyLayout
from lwbatch.run import score_file_async
from lwbatch.settings import Connection, Files, Hooks, Pacing
from lwbatch.wikis import wikis
from tests.conftest import EmulatorFactory, rev

FAST = Budget.from_rate(Rate(5000, 1.0))


class CountingLimiter:
    """Another budget policy: grants at once and counts, as a job-wide share might."""

    def __init__(self) -> None:
        self.budget = FAST
        self.acquired = 0
        self.paused: list[float] = []
        self.restored: list[float] = []
        self._watchers: list[Callable[[float], None]] = []

    async def acquire(self) -> None:
        self.acquired += 1
        for watcher in self._watchers:
            watcher(float(self.acquired))

    def pause(self, seconds: float) -> None:
        self.paused.append(seconds)

    def watch(self, callback: Callable[[float], None]) -> Callable[[], None]:
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback)

    def restore(self, grants: Sequence[float]) -> None:
        self.restored.extend(grants)


class ListSource:
    """An input that is no file: rows handed over in memory (as a Spark task would)."""

    def __init__(
        self, batches: list[list[Revision | InvalidRow]], layout: KeyLayout | None = None
    ) -> None:
        self._batches = batches
        self.key_layout = layout or KeyLayout()

    @property
    def name(self) -> str:
        return "<memory>"

    @property
    def total_rows(self) -> int | None:
        return sum(map(len, self._batches))

    def fingerprint(self) -> dict[str, Any]:
        return {"rows": [[repr(item) for item in batch] for batch in self._batches]}

    def batches(self) -> Iterator[list[Revision | InvalidRow]]:
        return iter(self._batches)


class ListSink:
    """An output that is no Parquet file: tables kept in memory until commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending: list[pa.Table] = []
        self.committed: list[dict[str, Any]] | None = None
        self.metadata: Mapping[str, bytes] = {}
        self.aborted = 0

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def rows_written(self) -> int:
        return sum(t.num_rows for t in self.pending)

    def open(self, schema: pa.Schema) -> None:
        self.schema = schema

    def write(self, rows: pa.Table) -> None:
        assert rows.schema.names == self.schema.names
        self.pending.append(rows)

    def commit(self, metadata: Mapping[str, bytes]) -> None:
        self.committed = [row for t in self.pending for row in t.to_pylist()]
        self.metadata = metadata

    def abort(self) -> None:
        self.pending.clear()
        self.aborted += 1


async def test_a_scorer_sends_every_attempt_through_an_injected_limiter(
    emulator: EmulatorFactory,
) -> None:
    limiter = CountingLimiter()
    sent: list[float] = []
    with emulator() as (emu, base_url):
        async with Scorer(
            ["enwiki-damaging", "enwiki-goodfaith"],
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            pacing=Pacing(limiter=limiter),
            hooks=Hooks(on_send=sent.append),
        ) as scorer:
            rows = [row async for row in scorer.score([11, 12, 13])]
    assert sorted(row.rev_id for row in rows if row.rev_id is not None) == [11, 12, 13]
    assert limiter.acquired == emu.stats.requests == 6
    assert sent == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert scorer.budget is FAST
    # The limiter outlives the Scorer: the Scorer's hook leaves with it.
    assert limiter._watchers == []


async def test_any_source_and_sink_work_and_the_journal_folds_into_the_sink(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    en, de = wikis().from_dbname("enwiki"), wikis().from_dbname("dewiki")
    source = ListSource(
        [
            [
                Revision(21, en, "enwiki"),
                Revision(22, en, "enwiki"),
                InvalidRow(3, -1, "rev_id -1 is negative", "enwiki"),
            ],
            [Revision(21, en, "enwiki"), Revision(21, de, "dewiki")],
        ],
        KeyLayout("wiki"),
    )
    sink = ListSink(tmp_path / "memory.out")
    models = ["revertrisk-language-agnostic"]
    journal = FileJournal(
        tmp_path / "memory.out",
        models=models,
        manifest={"input": source.fingerprint()},
        layout=source.key_layout,
    )
    with emulator() as (_, base_url):
        report = await score_file_async(
            source,
            sink,
            models=models,
            rate=FAST,
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            files=Files(journal=journal),
        )
    assert sink.committed is not None
    # Revision 21 of dewiki is not a duplicate of enwiki's 21.
    keys = sorted((row["wiki"], row["rev_id"]) for row in sink.committed)
    assert keys == [("dewiki", 21), ("enwiki", -1), ("enwiki", 21), ("enwiki", 22)]
    cells = {
        (row["wiki"], row["rev_id"]): row["revertrisk-language-agnostic"] for row in sink.committed
    }
    assert cells[("enwiki", -1)]["error"] == "invalid_input"
    assert [k for k in keys if cells[k]["error"] is None] == [k for k in keys if k[1] > 0]
    assert cells[("dewiki", 21)] != cells[("enwiki", 21)]
    assert report.rows_written == 4 and report.duplicate_rows == 1
    # The journal's manifest and invalid rows ride along for a rerun to adopt.
    assert set(sink.metadata) == {"lwbatch", "lwbatch.invalid_rows"}
    assert not (tmp_path / ".memory.out.lwbatch").exists()


async def test_a_scorer_leaves_the_garbage_collector_alone_unless_asked(
    gc_enabled: None, emulator: EmulatorFactory
) -> None:
    seen: list[bool] = []
    with emulator() as (_, base_url):
        for control in (False, True):
            async with Scorer(
                ["enwiki-damaging"],
                connection=Connection(endpoint=Endpoint(base_url=base_url)),
                pacing=Pacing(gc_control=control),
            ) as scorer:
                async for _row in scorer.score([31]):
                    seen.append(gc.isenabled())
            seen.append(gc.isenabled())
    # Off only inside a Scorer that asked, and back on when it closed.
    assert seen == [True, True, False, True]


async def test_a_sink_object_needs_its_journal_given_or_none(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="for a Sink object pass a Journal"):
        await score_file_async(
            ListSource([[rev(1)]]), ListSink(tmp_path / "o"), models=["enwiki-damaging"]
        )


def test_a_limiter_and_a_budget_exclude_each_other() -> None:
    with pytest.raises(UsageError, match="`limiter` carries its own budget"):
        Scorer(["enwiki-damaging"], rate=FAST, pacing=Pacing(limiter=CountingLimiter()))
    with pytest.raises(UsageError, match="`gc_control` needs lwbatch's own BudgetLimiter"):
        Scorer(["enwiki-damaging"], pacing=Pacing(limiter=CountingLimiter(), gc_control=True))


async def test_a_scorer_never_opened_leaves_an_injected_limiter_unwatched() -> None:
    # A run refused before it starts (output locked, another model list) builds its
    # Scorer but never opens it: the shared limiter must not keep calling its ledger.
    limiter = CountingLimiter()
    Scorer(
        ["enwiki-damaging"], pacing=Pacing(limiter=limiter), hooks=Hooks(on_send=lambda _t: None)
    )
    assert limiter._watchers == []
