"""Inputs beyond one file: JSON lines, standard input, several files, a directory of
Parquet files and a glob, read as one input with rows numbered across them."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lwbatch
from lwbatch import Budget, Endpoint, InputError, UsageError, score_file
from lwbatch.errors import RestartNeeded
from lwbatch.io.inputs import ManySource, expand, open_inputs, open_source
from lwbatch.io.jsonl_source import JsonlSource
from lwbatch.results import InvalidRow, Revision
from lwbatch.settings import Connection, Files
from tests.conftest import EmulatorFactory, emulated_p_true, write_parquet


def items_of(source: object) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for batch in source.batches():  # type: ignore[attr-defined]
        for item in batch:
            if isinstance(item, Revision):
                out.append((item.rev_id, item.wiki.dbname, item.page_id))
            else:
                assert isinstance(item, InvalidRow)
                out.append((item.row, str(item)))
    return out


def test_json_lines_are_read_like_csv_text(tmp_path: Path) -> None:
    path = tmp_path / "revs.jsonl"
    lines = [
        '{"rev_id": 1, "lang": "de", "page_id": 10, "comment": "kept aside"}',
        '{"rev_id": "2", "lang": "en"}',
        "",  # blank lines are skipped
        '{"rev_id": 3.0, "lang": null, "page_id": "30"}',
        '{"rev_id": "x", "lang": "en"}',
        "not json",
        '{"rev_id": [4], "lang": "en"}',
        '{"rev_id": 5, "lang": "qq"}',
        '{"lang": "en"}',
    ]
    path.write_text("\n".join(lines))  # no newline at the end
    source = JsonlSource(path, batch_rows=3)
    assert (source.key_layout.wiki_column, source.page_columns) == ("lang", ("page_id",))
    assert items_of(source) == [
        (1, "dewiki", 10),
        (2, "enwiki", None),
        (3, "enwiki", 30),
        (4, "row 4: rev_id 'x' is not an integer"),
        (5, "row 5: the line is not a JSON object"),
        (6, "row 6: rev_id '[4]' is not an integer"),
        (7, "row 7: lang 'qq' is not the language code of a Wikipedia"),
        (8, "row 8: rev_id is null"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\n\n", "has no JSON lines"),
        (
            b"[1, 2]\n",
            'line 1 is not a JSON object; give one object per line, such as {"rev_id": 123}',
        ),
        (
            b'{"revision": 1}\n',
            "no column 'rev_id' (columns: 'revision'); name the id column with --id-column",
        ),
    ],
)
def test_unusable_json_lines_are_refused_in_one_line(
    tmp_path: Path, content: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    path = tmp_path / "revs.jsonl"
    path.write_bytes(content)
    assert main(["plan", str(path), "-m", "enwiki-damaging"]) == 2
    assert capsys.readouterr().err == f"lwbatch: error: {path}: {message}\n"


def test_compressed_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "revs.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(b'{"rev_id": %d}\n' % r for r in range(1, 2001))))
    assert [i[0] for i in items_of(open_inputs([path], batch_rows=500))] == list(range(1, 2001))


def test_several_files_are_one_input_numbered_across_them(tmp_path: Path) -> None:
    a = write_parquet(tmp_path / "a.parquet", {"rev_id": pa.array([1, 2, None], pa.int64())})
    b = tmp_path / "b.csv"
    b.write_text("rev_id\n3\nzz\n1\n")
    source = open_inputs([a, b])
    assert isinstance(source, ManySource) and source.total_rows is None
    assert source.name == f"{a} (+1 more)"
    assert items_of(source) == [
        (1, "enwiki", None),
        (2, "enwiki", None),
        (3, f"row 3: rev_id is null ({a}, row 3)"),
        (3, "enwiki", None),
        (5, f"row 5: rev_id 'zz' is not an integer ({b}, row 2)"),
        (1, "enwiki", None),
    ]
    assert [f["path"] for f in source.fingerprint()["files"]] == [str(a), str(b)]
    c = write_parquet(tmp_path / "c.parquet", {"rev_id": [1], "lang": ["de"]})
    with pytest.raises(InputError) as info:
        open_inputs([a, c])
    assert str(info.value) == (
        f"{c}: its wiki column is 'lang' but {a}'s is absent; give inputs with the same columns"
    )


def test_a_directory_and_a_glob_expand_sorted(tmp_path: Path) -> None:
    folder = tmp_path / "part"
    folder.mkdir()
    for name in ("part-2.parquet", "part-1.parquet", "_SUCCESS", ".part-3.parquet.crc"):
        (folder / name).write_bytes(b"x")
    assert expand([folder]) == [folder / "part-1.parquet", folder / "part-2.parquet"]
    assert expand([str(folder / "part-*.parquet"), "-"]) == [
        folder / "part-1.parquet",
        folder / "part-2.parquet",
        "-",
    ]
    with pytest.raises(InputError) as info:
        expand([str(tmp_path / "none-*.parquet")])
    assert str(info.value) == f"{tmp_path / 'none-*.parquet'}: no file matches this pattern"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as info:
        expand([tmp_path / "empty"])
    assert str(info.value) == f"{tmp_path / 'empty'}: is a directory without Parquet files"


def test_an_ores_score_revisions_pipe_end_to_end(tmp_path: Path, emulator: EmulatorFactory) -> None:
    # ores score_revisions https://ores.wikimedia.org agent enwiki damaging < revs.jsonl
    lines = b"".join(b'{"rev_id": %d}\n' % r for r in (11, 12, 11, 13))
    out = tmp_path / "scores.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "LIFTWING_TOKEN"}
    with emulator() as (emu, base_url):
        args = [sys.executable, "-m", "lwbatch", "score", "-", "-o", str(out)]
        args += ["-m", "enwiki-damaging", "--base-url", base_url, "-q"]
        first = subprocess.run(args, input=lines, capture_output=True, env=env)
        assert first.returncode == 0, first.stderr
        assert emu.stats.requests == 3
    got = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    expected = {}
    for rev in (11, 12, 13):
        p = emulated_p_true("enwiki-damaging", rev)
        expected[rev] = {
            "damaging": {
                "score": {
                    "prediction": p > 0.5,
                    "probability": {"false": round(1 - p, 4), "true": p},
                }
            }
        }
    assert {d["rev_id"]: d["score"] for d in got} == expected
    # No spooled input left, only the output and its hidden copy.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".scores.jsonl.lwbatch.parquet",
        "scores.jsonl",
    ]


def test_standard_input_is_sniffed_and_resumes_like_a_file(
    tmp_path: Path,
    emulator: EmulatorFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lwbatch.cli import main

    def fed(data: bytes) -> tuple[int, str]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        code = main(args)
        return code, capsys.readouterr().err

    monkeypatch.delenv("LIFTWING_TOKEN", raising=False)
    out = tmp_path / "scores.parquet"
    with emulator(missing=frozenset({22})) as (emu, base_url):
        args = ["score", "-", "-o", str(out), "-q", "-m", "enwiki-damaging"]
        args += ["--base-url", base_url]
        assert fed(b"rev_id\n21\n22\n") == (0, "")
        # Rerunning the same standard input finds the finished output: nothing is sent.
        assert fed(b"rev_id\n21\n22\n") == (0, "")
        assert emu.stats.requests == 2
        # Other data on standard input is another input.
        assert fed(b"rev_id\n23\n") == (
            2,
            f"lwbatch: error: {out} belongs to a run with another input file (- (13 bytes) "
            "instead of - (10 bytes)); rerun it as it was, choose another output, or pass "
            "--restart to replace it\n",
        )
        assert fed(b"") == (2, "lwbatch: error: -: standard input is empty\n")
        # JSON lines, told by their first character.
        jsonl = tmp_path / "j.parquet"
        args[3] = str(jsonl)
        assert fed(b'  {"rev_id": 24}\n') == (0, "")
    assert sorted(pq.read_table(out).column("rev_id").to_pylist()) == [21, 22]
    assert pq.read_table(jsonl).column("rev_id").to_pylist() == [24]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.parquet", "scores.parquet"]


def test_the_library_takes_a_list_of_inputs(tmp_path: Path, emulator: EmulatorFactory) -> None:
    a = write_parquet(tmp_path / "a.parquet", {"rev_id": pa.array([1, 2], pa.int64())})
    b = tmp_path / "b.jsonl"
    b.write_bytes(b'{"rev_id": 2}\n{"rev_id": 3}\n')
    with emulator() as (_, base_url):
        report = score_file(
            [a, b],
            tmp_path / "o.parquet",
            models=["enwiki-damaging"],
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
        )
    assert (report.rows_read, report.distinct_revisions, report.duplicate_rows) == (4, 3, 1)
    # The files are the input: one more file is another input.
    c = write_parquet(tmp_path / "c.parquet", {"rev_id": pa.array([9], pa.int64())})
    with pytest.raises(RestartNeeded) as info:
        score_file([a, b, c], tmp_path / "o.parquet", models=["enwiki-damaging"])
    assert str(info.value).startswith(
        f"{tmp_path / 'o.parquet'} belongs to a run with another input file (2 files: {a}, "
        f"{b} instead of 3 files: {a}, {b}, {c}); "
    )


def test_kept_columns_carry_the_first_rows_values_to_the_output(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = write_parquet(
        tmp_path / "in.parquet",
        {
            "lang": ["en", "de", "en", "en"],
            "rev_id": pa.array([1, 1, 1, None], pa.int64()),
            "title": pa.array(["A", "B", "A again", "C"]).dictionary_encode(),
            "size": pa.array([10, 20, 30, 40], pa.int32()),
            "other": ["x", "y", "z", "w"],
        },
    )
    out = tmp_path / "out.parquet"
    with emulator() as (emu, base_url):
        args = ["score", str(inp), "-o", str(out), "-m", "{wiki}-damaging", "-q"]
        args += ["--base-url", base_url, "--keep-columns", "title,size"]
        assert main(args) == 0
        table = pq.read_table(out)
        capsys.readouterr()
        # A finished output with kept columns is adopted by a rerun: nothing asked again.
        assert main(args) == 0
        assert emu.stats.requests == 2
        capsys.readouterr()
        assert main([*args[:-1], "title"]) == 2
    assert capsys.readouterr().err.startswith(
        f"lwbatch: error: {out} belongs to a run with another --keep-columns (title, size "
        "instead of title); "
    )
    assert table.column_names == ["lang", "rev_id", "title", "size", "{wiki}-damaging"]
    assert table.schema.field("title").type == pa.string()
    assert table.schema.field("size").type == pa.int32()
    rows = sorted(
        (r["lang"], r["rev_id"] or 0, r["title"], r["size"], r["{wiki}-damaging"]["error"])
        for r in table.to_pylist()
    )
    assert rows == [
        ("de", 1, "B", 20, None),
        ("en", 0, "C", 40, "invalid_input"),
        ("en", 1, "A", 10, None),  # the first of the key's two rows
    ]


def test_json_lines_keep_every_field_as_it_was(tmp_path: Path, emulator: EmulatorFactory) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(
        b'{"rev_id": 5, "meta": {"tags": ["a", "b"], "n": 1.5}, "user": "X", "flag": true}\n'
        b'{"rev_id": 6, "user": null}\n'
    )
    with emulator() as (_, base_url):
        options: dict[str, object] = {
            "models": ["enwiki-damaging"],
            "rate": Budget.unlimited(),
            "connection": Connection(endpoint=Endpoint(base_url=base_url)),
            "files": Files(keep_columns="all"),
        }
        score_file(inp, tmp_path / "o.jsonl", **options)  # type: ignore[arg-type]
        score_file(inp, tmp_path / "o.parquet", **options)  # type: ignore[arg-type]
    lines = sorted(
        (orjson.loads(x) for x in (tmp_path / "o.jsonl").read_bytes().splitlines()),
        key=lambda d: d["rev_id"],
    )
    assert [{k: v for k, v in d.items() if k != "score"} for d in lines] == [
        {"rev_id": 5, "meta": {"tags": ["a", "b"], "n": 1.5}, "user": "X", "flag": True},
        {"rev_id": 6, "meta": None, "user": None, "flag": None},
    ]
    assert list(lines[0]) == ["rev_id", "meta", "user", "flag", "score"]
    # In Parquet the values are the JSON text they were.
    assert pq.read_table(tmp_path / "o.parquet").sort_by("rev_id").column("meta").to_pylist() == [
        '{"tags":["a","b"],"n":1.5}',
        None,
    ]


@pytest.mark.parametrize(
    ("keep", "error", "message"),
    [
        (
            ["nope"],
            InputError,
            "{inp}: no column 'nope' for `keep_columns` (columns: 'rev_id', 'lang', "
            "'enwiki-damaging')",
        ),
        (["lang"], UsageError, "`keep_columns` 'lang' is a key column: the output has it already"),
        (
            ["enwiki-damaging"],
            UsageError,
            "`keep_columns` 'enwiki-damaging': the output has a column of that name already "
            "(a key or a model); rename it in the input",
        ),
    ],
)
def test_columns_that_cannot_be_kept_are_refused(
    tmp_path: Path, keep: list[str], error: type[Exception], message: str
) -> None:
    inp = write_parquet(
        tmp_path / "in.parquet", {"rev_id": [1], "lang": ["en"], "enwiki-damaging": [0]}
    )
    with pytest.raises(error) as info:
        score_file(
            inp, tmp_path / "o.parquet", models=["enwiki-damaging"], files=Files(keep_columns=keep)
        )
    assert str(info.value) == message.format(inp=inp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_several_inputs_must_keep_the_same_columns_and_all_have_page_ids(
    tmp_path: Path,
) -> None:
    a = write_parquet(tmp_path / "a.parquet", {"rev_id": [1], "t": ["x"], "page_id": [5]})
    b = write_parquet(tmp_path / "b.parquet", {"rev_id": [2], "t": [3]})
    with pytest.raises(InputError) as info:
        open_inputs([a, b], keep_columns=["t"])
    assert str(info.value) == (
        f"{b}: the columns kept (t int64) differ from {a}'s (t string); give inputs with "
        "the same columns"
    )
    many = open_inputs([a, b])
    assert isinstance(many, ManySource) and many.page_columns == ()
    with pytest.raises(InputError) as info:
        score_file([a, b], tmp_path / "o.parquet", models=["outlink-topic-model"])
    assert "outlink-topic-model needs a page_id or page_title column" in str(info.value)
    with pytest.raises(UsageError) as info:
        open_inputs(["-", "-"], stdin=io.BytesIO(b"rev_id\n1\n"), spool_dir=tmp_path)
    assert str(info.value) == "`input` names standard input (-) more than once"


def test_invalid_rows_of_a_later_file_keep_their_values_and_the_api_keeps_columns(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    a = write_parquet(tmp_path / "a.parquet", {"rev_id": [1], "t": ["first"]})
    b = write_parquet(tmp_path / "b.parquet", {"rev_id": [-4], "t": ["second"]})
    items = items_of(open_inputs([a, b], keep_columns=["t"]))
    assert items[1] == (2, f"row 2: rev_id -4 is not a positive integer ({b}, row 1)")
    kept = [i.kept for bt in open_inputs([a, b], keep_columns=["t"]).batches() for i in bt]
    assert kept == [("first",), ("second",)]
    with emulator() as (_, base_url):
        table = lwbatch.score(
            pa.table({"rev_id": [3], "note": ["n"]}),
            models=["enwiki-damaging"],
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            files=Files(keep_columns=["note"]),
        )
    assert table.column_names == ["rev_id", "note", "enwiki-damaging"]
    assert table.column("note").to_pylist() == ["n"]
    with pytest.raises(UsageError):
        score_file(
            open_inputs([a]),
            tmp_path / "o.parquet",
            models=["enwiki-damaging"],
            files=Files(keep_columns=["t"]),
        )


def test_a_spark_style_directory_is_one_input(tmp_path: Path, emulator: EmulatorFactory) -> None:
    from lwbatch.cli import main

    folder = tmp_path / "revisions"
    folder.mkdir()
    write_parquet(folder / "part-00001.parquet", {"rev_id": pa.array([3, 4], pa.int64())})
    write_parquet(folder / "part-00000.parquet", {"rev_id": pa.array([1, 2, 3], pa.int64())})
    (folder / "_SUCCESS").write_bytes(b"")
    out = tmp_path / "o.parquet"
    with emulator() as (emu, base_url):
        args = ["score", str(folder), "-o", str(out), "-m", "enwiki-damaging", "-q"]
        assert main([*args, "--base-url", base_url, "--rate", "unlimited"]) == 0
        assert emu.stats.requests == 4
    assert sorted(pq.read_table(out).column("rev_id").to_pylist()) == [1, 2, 3, 4]


def test_outlink_takes_the_page_by_title_where_the_input_has_no_page_id(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = tmp_path / "in.csv"
    # A data-lake export may hold both columns, with some page_ids missing: the title
    # stands in for those rows.
    inp.write_text(
        "rev_id,lang,page_id,page_title\n11,en,,Albert Einstein\n12,de,,\n13,fr,,Paris\n"
        "14,en,400,Ignored Title\n"
    )
    with emulator() as (emu, base_url):
        report = score_file(
            inp,
            tmp_path / "out.parquet",
            models=["outlink-topic-model"],
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
        )
        answered = set(emu.stats.answered)
    assert report.requests_sent == 3
    # The emulator keys outlink answers by the revision sent (revision_id).
    assert answered == {
        ("outlink-topic-model", "enwiki", 11),
        ("outlink-topic-model", "frwiki", 13),
        ("outlink-topic-model", "enwiki", 14),
    }
    cells = {
        row["rev_id"]: row["outlink-topic-model"]
        for row in pq.read_table(tmp_path / "out.parquet").to_pylist()
    }
    assert cells[11]["error"] is None and cells[13]["error"] is None and cells[14]["error"] is None
    assert (cells[12]["error"], cells[12]["error_message"]) == (
        "unscorable",
        "outlink-topic-model needs the revision's page_id or page_title, and this row has neither",
    )


def test_a_json_line_with_a_field_the_first_line_lacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    late_lang = tmp_path / "late.jsonl"
    late_lang.write_bytes(b'{"rev_id": 1}\n{"rev_id": 12345, "lang": "de"}\n')
    source = open_source(late_lang)
    with pytest.raises(InputError) as refused:
        items_of(source)
    assert str(refused.value) == (
        f"{late_lang}: line 2 has a 'lang' field the first line lacks: the first line names "
        "the columns, so put 'lang' on it too (null where a row has none)"
    )
    late_note = tmp_path / "note.jsonl"
    late_note.write_bytes(b'{"rev_id": 1}\n{"rev_id": 2, "note": "x"}\n{"rev_id": 3, "y": 1}\n')
    caplog.set_level("WARNING", "lwbatch")
    assert len(items_of(open_source(late_note))) == 3
    assert [r.getMessage() for r in caplog.records] == [
        f"{late_note}: line 2 has fields the first line lacks ('note'); they are not read: "
        "the first line names the columns"
    ]
