"""Output formats for ORES users: `jsonl` (ORES' score_revisions lines) and `ores-json`
(ORES v3 documents), each checked against documents written here by hand."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Budget, Endpoint, UsageError, score_file
from lwbatch.io.ores_sinks import JsonlSink, OresJsonSink
from lwbatch.io.rows import RowBuffer
from lwbatch.keys import KeyLayout, RowKey
from lwbatch.protocol.catalog import default_catalog
from lwbatch.results import ErrorType, InvalidRow, Score, ScoredRow
from lwbatch.settings import Connection, Files, Pacing
from lwbatch.testing.emulator import Latency
from tests.conftest import EmulatorFactory, emulated_p_true, kill_after_requests, write_parquet

NOT_FOUND_RR = "Could not make prediction for revision {} (en). Reason: revision_missing"
TEXT_DELETED = "Missing resource for rev-id 4: TextDeleted: Text deleted (datasource.revision.text)"


def binary(model: str, rev_id: int) -> dict[str, Any]:
    p = emulated_p_true(model, rev_id)
    return {"score": {"prediction": p > 0.5, "probability": {"false": round(1 - p, 4), "true": p}}}


def test_an_ores_v3_document_and_score_revisions_lines_end_to_end(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2, 4, 2], pa.int64())})
    models = ["enwiki-damaging", "enwiki-goodfaith"]
    with emulator(deleted=frozenset({4})) as (_, base_url):
        options: dict[str, Any] = {
            "models": models,
            "rate": Budget.unlimited(),
            "connection": Connection(endpoint=Endpoint(base_url=base_url)),
        }
        score_file(inp, tmp_path / "scores.json", **options)
        score_file(inp, tmp_path / "scores.jsonl", **options)
    deleted = {"error": {"type": "TextDeleted", "message": TEXT_DELETED}}
    # What ORES' /v3/scores/enwiki/?models=damaging|goodfaith&revids=1|2|4 answered.
    assert orjson.loads((tmp_path / "scores.json").read_bytes()) == {
        "enwiki": {
            "models": {"damaging": {"version": "0.5.1"}, "goodfaith": {"version": "0.5.1"}},
            "scores": {
                "1": {
                    "damaging": binary("enwiki-damaging", 1),
                    "goodfaith": binary("enwiki-goodfaith", 1),
                },
                "2": {
                    "damaging": binary("enwiki-damaging", 2),
                    "goodfaith": binary("enwiki-goodfaith", 2),
                },
                "4": {"damaging": deleted, "goodfaith": deleted},
            },
        }
    }
    lines = (tmp_path / "scores.jsonl").read_bytes().splitlines()
    assert sorted((orjson.loads(line) for line in lines), key=lambda d: d["rev_id"]) == [
        {
            "rev_id": 1,
            "score": {
                "damaging": binary("enwiki-damaging", 1),
                "goodfaith": binary("enwiki-goodfaith", 1),
            },
        },
        {
            "rev_id": 2,
            "score": {
                "damaging": binary("enwiki-damaging", 2),
                "goodfaith": binary("enwiki-goodfaith", 2),
            },
        },
        {"rev_id": 4, "score": {"damaging": deleted, "goodfaith": deleted}},
    ]


def rows_of_several_wikis() -> tuple[list[Any], pa.Table]:
    specs = default_catalog().resolve_all(["{wiki}-damaging", "revertrisk-language-agnostic"])
    buffer = RowBuffer(specs, KeyLayout("wiki_db"))
    ok = Score(prediction=True, probability={"false": 0.25, "true": 0.75}, model_version="0.5.1")
    rr = Score(prediction=False, probability={"true": 0.1, "false": 0.9}, model_version="3")
    gone = Score.failed(ErrorType.NOT_FOUND, NOT_FOUND_RR.format(9))
    bad = Score.failed(ErrorType.INVALID_INPUT, "row 4: wiki_db 'xx' is not a wiki")
    for key, damaging, revertrisk in [
        (RowKey("enwiki", 7), ok, rr),
        (RowKey("dewiki", 7), Score.failed(ErrorType.TRANSIENT_ERROR, "HTTP 503 5 times"), rr),
        (RowKey("enwiki", 9), Score.failed(ErrorType.DELETED, "UserDeleted: gone"), gone),
    ]:
        buffer.add(
            ScoredRow(
                key, {"{wiki}-damaging": damaging, "revertrisk-language-agnostic": revertrisk}
            )
        )
    invalid = InvalidRow(row=4, rev_id=None, reason="wiki_db 'xx' is not a wiki", wiki="xx")
    buffer.add(
        ScoredRow(None, {"{wiki}-damaging": bad, "revertrisk-language-agnostic": bad}, invalid)
    )
    return specs, buffer.take()[0]


def test_ores_json_keeps_one_document_per_wiki_and_invalid_rows(tmp_path: Path) -> None:
    specs, table = rows_of_several_wikis()
    sink = OresJsonSink(tmp_path / "o.json", specs=specs)
    sink.open(table.schema)
    sink.write(table.slice(0, 2))
    sink.write(table.slice(2))
    assert not (tmp_path / "o.json").exists()  # nothing before commit
    sink.commit({})
    assert sink.rows_written == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json"]  # no parts left
    ok = {"score": {"prediction": True, "probability": {"false": 0.25, "true": 0.75}}}
    rr = {"score": {"prediction": False, "probability": {"true": 0.1, "false": 0.9}}}
    invalid = {"error": {"type": "invalid_input", "message": "row 4: wiki_db 'xx' is not a wiki"}}
    assert orjson.loads((tmp_path / "o.json").read_bytes()) == {
        "dewiki": {
            # Every model with an entry is listed; damaging answered no version here.
            "models": {
                "damaging": {"version": None},
                "revertrisk-language-agnostic": {"version": "3"},
            },
            "scores": {
                "7": {
                    "damaging": {
                        "error": {"type": "transient_error", "message": "HTTP 503 5 times"}
                    },
                    "revertrisk-language-agnostic": rr,
                }
            },
        },
        "enwiki": {
            "models": {
                "damaging": {"version": "0.5.1"},
                "revertrisk-language-agnostic": {"version": "3"},
            },
            "scores": {
                "7": {"damaging": ok, "revertrisk-language-agnostic": rr},
                "9": {
                    "damaging": {"error": {"type": "UserDeleted", "message": "UserDeleted: gone"}},
                    "revertrisk-language-agnostic": {
                        "error": {"type": "RevisionNotFound", "message": NOT_FOUND_RR.format(9)}
                    },
                },
            },
        },
        "invalid_input": {
            "models": {
                "damaging": {"version": None},
                "revertrisk-language-agnostic": {"version": None},
            },
            "scores": {"invalid-1": {"damaging": invalid, "revertrisk-language-agnostic": invalid}},
        },
    }


def test_jsonl_lines_carry_the_wiki_column(tmp_path: Path) -> None:
    specs, table = rows_of_several_wikis()
    sink = JsonlSink(tmp_path / "o.jsonl", specs=specs)
    sink.open(table.schema)
    sink.write(table)
    sink.abort()
    assert list(tmp_path.iterdir()) == []  # abort leaves nothing
    sink = JsonlSink(tmp_path / "o.jsonl", specs=specs)
    sink.open(table.schema)
    sink.write(table)
    sink.commit({})
    first, *_, last = (
        orjson.loads(line) for line in (tmp_path / "o.jsonl").read_bytes().splitlines()
    )
    assert first == {
        "wiki_db": "enwiki",
        "rev_id": 7,
        "score": {
            "damaging": {
                "score": {"prediction": True, "probability": {"false": 0.25, "true": 0.75}}
            },
            "revertrisk-language-agnostic": {
                "score": {"prediction": False, "probability": {"true": 0.1, "false": 0.9}}
            },
        },
    }
    assert (last["wiki_db"], last["rev_id"]) == ("xx", None)


def test_model_names_are_ores_kinds_only_where_unique() -> None:
    from lwbatch.io.ores_sinks import ores_names

    specs = default_catalog().resolve_all(
        ["enwiki-damaging", "dewiki-damaging", "enwiki-goodfaith", "readability"]
    )
    assert ores_names(specs) == {
        "enwiki-damaging": "enwiki-damaging",
        "dewiki-damaging": "dewiki-damaging",
        "enwiki-goodfaith": "goodfaith",
        "readability": "readability",
    }


def test_a_finished_text_output_is_read_back_from_its_hidden_copy(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch import RetryPolicy
    from lwbatch.cli import main

    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(range(1, 41), pa.int64())})
    out = tmp_path / "scores.jsonl"
    copy = tmp_path / ".scores.jsonl.lwbatch.parquet"

    def failed() -> int:
        lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
        assert sorted(d["rev_id"] for d in lines) == list(range(1, 41))
        return sum("error" in d["score"]["damaging"] for d in lines)

    with emulator(error_rate=0.5, seed=3) as (emu, base_url):
        options: dict[str, Any] = {
            "models": ["enwiki-damaging"],
            "rate": Budget.unlimited(),
            "connection": Connection(endpoint=Endpoint(base_url=base_url)),
            "pacing": Pacing(retry=RetryPolicy(max_attempts=1)),
        }
        score_file(inp, out, **options)
        first, sent = failed(), emu.stats.requests
        assert first > 0 and copy.is_file()
        # The rerun asks again only what failed transiently.
        score_file(inp, out, **options)
        assert emu.stats.requests - sent == first
        assert failed() < first
    # Without its copy, a finished output is refused rather than paid for again.
    copy.unlink()
    capsys.readouterr()  # what the library runs above logged
    args = ["score", str(inp), "-o", str(out), "-m", "enwiki-damaging", "-q"]
    assert main([*args, "--base-url", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err == (
        f"lwbatch: error: {out} already exists without the hidden copy lwbatch keeps beside "
        f"it ({copy.name}) to resume from; pass --restart to score again, or choose another "
        "output\n"
    )


def test_the_format_flag_and_the_name_must_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2], pa.int64())})
    args = ["score", str(inp), "-m", "enwiki-damaging", "--base-url", "http://127.0.0.1:9"]
    assert main([*args, "-o", str(tmp_path / "s.parquet"), "--format", "jsonl"]) == 2
    assert capsys.readouterr().err == (
        f"lwbatch: error: --output {tmp_path / 's.parquet'} is named as parquet but --format "
        "is jsonl; name it *.jsonl or *.ndjson, or give another --format\n"
    )
    assert (
        main([*args, "-o", str(tmp_path / "s"), "--format", "ores-json", "--engine", "spark"]) == 2
    )
    assert capsys.readouterr().err.endswith(
        "--format ores-json is for the local engine: a Spark job writes Parquet\n"
    )
    with pytest.raises(UsageError):
        score_file(inp, tmp_path / "x.xml", models=["enwiki-damaging"])


@pytest.mark.parametrize("name", ["scores.jsonl", "scores.json", "long.parquet"])
def test_a_run_killed_mid_way_resumes_into_the_same_text_output(
    tmp_path: Path, emulator: EmulatorFactory, name: str
) -> None:
    ids = list(range(1, 121))
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(ids, pa.int64())})
    out = tmp_path / name
    args = [sys.executable, "-m", "lwbatch", "score", str(inp), "-o", str(out), "-q"]
    args += ["-m", "enwiki-damaging", "--rate", "2000/s", "--concurrency", "8"]
    args += ["--format", "long"] if name == "long.parquet" else []
    env = {k: v for k, v in os.environ.items() if k != "LIFTWING_TOKEN"}
    with emulator(latency=Latency("uniform", 0.005, 0.02)) as (emu, base_url):
        args += ["--base-url", base_url]
        kill_after_requests(args, env, emu, 40)
        assert not out.exists()
        before = emu.stats.requests
        from lwbatch.cli import main

        assert main(args[3:]) == 0  # the rerun, in this process
        # Answers journaled before the kill are not asked again: the rerun asks the rest
        # and at most the 8 in flight and a few received but not yet journaled.
        assert emu.stats.requests - before <= 120 - before + 8 + 8
    if name == "long.parquet":
        table = pq.read_table(out)
        assert table.num_rows == len(ids) and set(table.column("attempts").to_pylist()) == {1}
        got = {
            r["rev_id"]: {
                "damaging": {
                    "score": {
                        "prediction": r["prediction"] == "true",
                        "probability": dict(r["probability"]),
                    }
                }
            }
            for r in table.to_pylist()
        }
    elif name.endswith(".jsonl"):
        got = {d["rev_id"]: d["score"] for d in map(orjson.loads, out.read_bytes().splitlines())}
    else:
        got = {int(k): v for k, v in orjson.loads(out.read_bytes())["enwiki"]["scores"].items()}
    assert got == {rev: {"damaging": binary("enwiki-damaging", rev)} for rev in ids}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".{name}.lwbatch.parquet",  # the hidden copy a rerun reads back
        "in.parquet",
        name,
    ]


def test_the_parquet_output_is_unchanged(tmp_path: Path, emulator: EmulatorFactory) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([5], pa.int64())})
    with emulator() as (_, base_url):
        score_file(
            inp,
            tmp_path / "o.parquet",
            models=["enwiki-damaging"],
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
        )
    assert pq.read_table(tmp_path / "o.parquet").column_names == ["rev_id", "enwiki-damaging"]


def test_the_long_format_has_one_row_per_key_and_model_with_latency_and_attempts(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = write_parquet(
        tmp_path / "in.parquet",
        {
            "rev_id": pa.array([1, 2, 1, None], pa.int64()),
            "wiki_db": ["enwiki", "dewiki", "dewiki", "enwiki"],
            "note": ["a", "b", "c", "d"],
        },
    )
    out = tmp_path / "long.parquet"
    with emulator(missing=frozenset({2})) as (_, base_url):
        score_file(
            inp,
            out,
            models=["{wiki}-damaging", "revertrisk-language-agnostic"],
            wiki_column="wiki_db",
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            files=Files(format="long", keep_columns=["note"]),
        )
    table = pq.read_table(out)
    assert table.column_names == [
        "wiki_db", "rev_id", "note", "model", "model_version", "prediction", "probability",
        "error", "error_message", "latency_ms", "attempts",
    ]  # fmt: skip
    assert table.schema.field("prediction").type == pa.string()
    rows = sorted(table.to_pylist(), key=lambda r: (r["wiki_db"], r["rev_id"] or 0, r["model"]))
    assert [(r["wiki_db"], r["rev_id"], r["note"], r["model"]) for r in rows] == [
        ("dewiki", 1, "c", "dewiki-damaging"),
        ("dewiki", 1, "c", "revertrisk-language-agnostic"),
        ("dewiki", 2, "b", "dewiki-damaging"),
        ("dewiki", 2, "b", "revertrisk-language-agnostic"),
        ("enwiki", None, "d", "enwiki-damaging"),
        ("enwiki", None, "d", "revertrisk-language-agnostic"),
        ("enwiki", 1, "a", "enwiki-damaging"),
        ("enwiki", 1, "a", "revertrisk-language-agnostic"),
    ]
    p = emulated_p_true("enwiki-damaging", 1)
    en = rows[6]
    assert (en["prediction"], en["model_version"], en["error"]) == (
        "true" if p > 0.5 else "false",
        "0.5.1",
        None,
    )
    assert en["probability"] == [("false", round(1 - p, 4)), ("true", p)]
    assert en["attempts"] == 1 and en["latency_ms"] is not None and en["latency_ms"] >= 0
    gone = rows[2]
    assert (gone["error"], gone["prediction"], gone["attempts"]) == ("not_found", None, 1)
    invalid = rows[4]
    assert (invalid["error"], invalid["attempts"], invalid["latency_ms"]) == (
        "invalid_input",
        None,
        None,
    )


def test_ores_json_keeps_invalid_rows_apart_whatever_their_wiki_says(tmp_path: Path) -> None:
    specs = default_catalog().resolve_all(["{wiki}-damaging"])
    buffer = RowBuffer(specs, KeyLayout("wiki_db"))
    bad = Score.failed(ErrorType.INVALID_INPUT, "row 1: wiki_db 'a/b' is not a wiki")
    for n, wiki in enumerate(["a/b", "../x", "a/b", *(f"w{i}" for i in range(300))]):
        invalid = InvalidRow(row=n + 1, rev_id=0, reason="bad", wiki=wiki)
        buffer.add(ScoredRow(None, {"{wiki}-damaging": bad}, invalid))
    table = buffer.take()[0]
    sink = OresJsonSink(tmp_path / "o.json", specs=specs)
    sink.open(table.schema)
    sink.write(table)
    sink.commit({})
    document = orjson.loads((tmp_path / "o.json").read_bytes())
    assert list(document) == ["invalid_input"]
    assert sorted(document["invalid_input"]["scores"], key=lambda k: int(k[8:])) == [
        f"invalid-{n}" for n in range(1, 304)
    ]  # every row, none under a shared rev_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json"]


def test_a_kept_score_column_would_be_overwritten_in_jsonl(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b'{"rev_id": 1, "score": {"damaging": 1}}\n')
    with pytest.raises(UsageError) as info:
        score_file(
            inp, tmp_path / "o.jsonl", models=["enwiki-damaging"], files=Files(keep_columns="all")
        )
    assert str(info.value) == (
        "`keep_columns` 'score': each jsonl line's scores go there; leave that column out "
        "or rename it"
    )


def test_leftovers_of_a_killed_run_are_swept_by_the_next(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1], pa.int64())})
    dead = 2**22 + 12345  # above any pid this machine hands out
    spool = tmp_path / f".o.json.stdin.{dead}.tmp"
    spool.mkdir()
    (spool / "stdin").write_bytes(b"rev_id\n1\n")
    for name in (f".o.json.part0.{dead}.tmp", f".o.json.copy.{dead}.tmp", f".o.json.{dead}.tmp"):
        (tmp_path / name).write_bytes(b"x")
    with emulator() as (_, base_url):
        score_file(
            inp,
            tmp_path / "o.json",
            models=["enwiki-damaging"],
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".o.json.lwbatch.parquet",
        "in.parquet",
        "o.json",
    ]


def test_invalid_rows_of_the_long_format_keep_the_column_name_not_an_invented_model(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = write_parquet(
        tmp_path / "in.parquet",
        {
            "rev_id": pa.array([1, 2, 3, 4], pa.int64()),
            "wiki_db": ["enwiki", "ENWIKI", "en.wikipedia.org", "EN"],
        },
    )
    out = tmp_path / "long.parquet"
    with emulator() as (_, base_url):
        score_file(
            inp,
            out,
            models=["{wiki}-damaging"],
            wiki_column="wiki_db",
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            files=Files(format="long"),
        )
    rows = sorted(pq.read_table(out).to_pylist(), key=lambda r: r["rev_id"])
    assert [(r["wiki_db"], r["model"], r["error"]) for r in rows] == [
        ("enwiki", "enwiki-damaging", None),
        ("ENWIKI", "{wiki}-damaging", "invalid_input"),
        ("en.wikipedia.org", "{wiki}-damaging", "invalid_input"),
        ("EN", "{wiki}-damaging", "invalid_input"),
    ]


def test_kept_columns_are_refused_for_ores_json_which_has_no_place_for_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = write_parquet(
        tmp_path / "in.parquet", {"rev_id": pa.array([1], pa.int64()), "note": ["a"]}
    )
    code = main(
        ["score", str(inp), "-o", str(tmp_path / "o.json"), "-m", "enwiki-damaging",
         "--keep-columns", "all", "--endpoint", "http://127.0.0.1:9"]
    )  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err == (
        "lwbatch: error: --keep-columns 'note': an ORES v3 document (ores-json) has no "
        "place for other columns; write jsonl or parquet to keep them\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
