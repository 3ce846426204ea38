"""A scoring run leaves pandas (and pyarrow.compute) alone, and the arrays it builds are the
ones pa.array builds."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from lwbatch.io.arrays import array, empty_table
from lwbatch.testing.emulator import Emulator

# Each step runs in one interpreter, in order; after each, whether pandas is loaded.
_STEPS = textwrap.dedent(
    """
    import sys
    import datetime as dt
    import pyarrow.parquet as pq
    from lwbatch.io.arrays import array
    import pyarrow as pa

    url, tmp = sys.argv[1], sys.argv[2]
    from lwbatch.cli import main

    stamps = [dt.datetime(2026, 1, 1, 12, 0, i) for i in range(6)]
    pq.write_table(
        pa.Table.from_arrays(
            [array([101, 102, 103, 104, 0, 101], pa.int64()),
             array(["en", "de", "en", "en", "en", "en"], pa.string()),
             array(stamps, pa.timestamp("us")),
             pa.Array.from_buffers(pa.int64(), 6, [None, pa.py_buffer(
                 __import__("array").array("q", [1767268800123456789] * 6))]).view(
                 pa.timestamp("ns"))],
            names=["rev_id", "lang", "made", "made_ns"],
        ),
        f"{tmp}/in.parquet",
    )
    with open(f"{tmp}/in.csv", "w") as f:
        f.write("rev_id\\n201\\n202\\nnot-a-number\\n")
    with open(f"{tmp}/in.jsonl", "w") as f:
        f.write('{"rev_id": 301}\\n{"rev_id": 302}\\n')

    base = ["--endpoint", url, "--rate", "unlimited", "-q"]
    steps = {
        "score parquet, kept columns": ["score", f"{tmp}/in.parquet", "-o", f"{tmp}/a.parquet",
            "-m", "enwiki-damaging", "-m", "{wiki}-goodfaith", "--keep-columns", "made,made_ns"],
        "resume a finished output": ["score", f"{tmp}/in.parquet", "-o", f"{tmp}/a.parquet",
            "-m", "enwiki-damaging", "-m", "{wiki}-goodfaith", "--keep-columns", "made,made_ns"],
        "score csv to long, with a cache": ["score", f"{tmp}/in.csv", "-o", f"{tmp}/b.parquet",
            "-m", "enwiki-damaging", "--format", "long", "--cache", f"{tmp}/cache.sqlite"],
        "score jsonl to ores-json": ["score", f"{tmp}/in.jsonl", "-o", f"{tmp}/c.json",
            "-m", "enwiki-damaging", "--format", "ores-json"],
        "plan": ["plan", f"{tmp}/in.parquet", "-m", "enwiki-damaging"],
        "cache export": ["cache", "export", f"{tmp}/cache.sqlite", "-o", f"{tmp}/d.parquet"],
    }
    for name, args in steps.items():
        extra = base if args[0] == "score" else base[:-1] if args[0] == "plan" else []
        code = main(args + extra)
        print(f"{name}: exit {code}, pandas {'pandas' in sys.modules}")
        if name == "score parquet, kept columns":
            print(f"first score: pyarrow.compute {'pyarrow.compute' in sys.modules}")

    with pq.ParquetFile(f"{tmp}/a.parquet") as kept:
        print("kept ns:", kept.read(columns=["made_ns"]).column(0)[0].value)
    import lwbatch
    from lwbatch import Connection, Endpoint
    lwbatch.score([401, 402], models=["enwiki-damaging"], rate="unlimited",
                  connection=Connection(endpoint=Endpoint(base_url=url)))
    print(f"lwbatch.score: pandas {'pandas' in sys.modules}")
    """
)


def test_scoring_runs_never_import_pandas(
    running_emulator: tuple[Emulator, str], tmp_path: Path
) -> None:
    pytest.importorskip("pandas")  # the test means something only where pandas is installed
    _, url = running_emulator
    done = subprocess.run(
        [sys.executable, "-c", _STEPS, url, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LWBATCH_DEBUG": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if "pandas" in line] == [
        "score parquet, kept columns: exit 0, pandas False",
        "resume a finished output: exit 0, pandas False",
        "score csv to long, with a cache: exit 0, pandas False",
        "score jsonl to ores-json: exit 0, pandas False",
        "plan: exit 0, pandas False",
        "cache export: exit 0, pandas False",
        "lwbatch.score: pandas False",
    ]
    assert "kept ns: 1767268800123456789" in done.stdout.splitlines()
    # pyarrow.compute is ~9 MB of a run's memory; a fresh run has no use for it.
    assert "first score: pyarrow.compute False" in done.stdout.splitlines()


_CASES: list[tuple[list[Any], pa.DataType]] = [
    ([1, None, -(2**63)], pa.int64()),
    ([7, None], pa.int32()),
    ([0.25, None, float("inf")], pa.float64()),
    ([True, None, False], pa.bool_()),
    (["é", None, ""], pa.string()),
    ([b"\x00", None], pa.binary()),
    ([["a", "b"], None, [], ["c"]], pa.list_(pa.string())),
    ([["a"], None], pa.large_list(pa.string())),
    ([{"true": 0.1, "false": 0.9}, None, {}, [("x", 1.0)]], pa.map_(pa.string(), pa.float64())),
    ([{"a": 1, "b": "x"}, None, {"a": None}], pa.struct([("a", pa.int32()), ("b", pa.string())])),
    ([dt.datetime(2020, 1, 2, 3, 4, 5, 678901), None], pa.timestamp("us")),
    ([dt.datetime(1969, 12, 31, 23, 59, 59), None], pa.timestamp("s")),
    ([dt.datetime(2020, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC)], pa.timestamp("ms", "UTC")),
    ([dt.date(2020, 1, 2), None, dt.date(1960, 5, 1)], pa.date32()),
    ([dt.timedelta(seconds=5, microseconds=3), None], pa.duration("us")),
    (["a", None, "a"], pa.dictionary(pa.int32(), pa.string())),
    ([None, None], pa.null()),
    ([], pa.list_(pa.string())),
    ([None], pa.map_(pa.string(), pa.float64())),
    ([{"l": ["a", None]}, None, {"l": None}], pa.struct([("l", pa.list_(pa.string()))])),
    ([[{"x": 1}, None], None, []], pa.list_(pa.struct([("x", pa.int64())]))),
    ([{"k": None}, None, {}], pa.map_(pa.string(), pa.float64())),
    ([[{"k": 1.0}], [None], None], pa.list_(pa.map_(pa.string(), pa.float64()))),
    ([None, {}], pa.struct([])),
]


@pytest.mark.parametrize(("values", "kind"), _CASES, ids=[str(k) for _, k in _CASES])
def test_arrays_hold_the_values_given(values: list[Any], kind: pa.DataType) -> None:
    built = array(values, kind)
    built.validate(full=True)
    assert built.type == kind
    assert built.null_count == sum(v is None for v in values)
    assert built.equals(pa.array(values, kind))


def test_empty_table_has_the_schema_and_no_rows() -> None:
    schema = pa.schema([("rev_id", pa.int64()), ("m", pa.struct([("p", pa.float64())]))])
    table = empty_table(schema)
    assert table.schema == schema
    assert table.num_rows == 0


def test_importing_lwbatch_and_its_command_line_loads_nothing_heavy() -> None:
    # The console entry installs its signal handlers after these imports and before the
    # heavy ones (tests/test_process_edges.py signals it during them).
    code = (
        "import sys, lwbatch, lwbatch.cli; "
        "print(sorted(m for m in ('pyarrow', 'aiohttp', 'httpx', 'anyio', 'pandas', 'click') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


def test_public_names_resolve_on_first_use() -> None:
    code = (
        "import sys, lwbatch; a = 'lwbatch.tables' in sys.modules; f = lwbatch.flatten; "
        "print(a, 'lwbatch.tables' in sys.modules, f.__module__, callable(lwbatch.wikis))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == "False True lwbatch.tables True\n", done.stderr
