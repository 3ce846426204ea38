"""End to end: the `lwbatch` entry point against the emulator on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Connection, Endpoint, Hooks, score_file_async
from lwbatch.cli import main
from tests.conftest import EmulatorFactory, emulated_p_true, max_in_window, write_parquet

MODELS = ["enwiki-damaging", "enwiki-goodfaith", "revertrisk-language-agnostic"]
UNKNOWN = 2_100_000_001


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def binary(model: str, rev: int, *, version: str, revertrisk: bool = False) -> dict[str, Any]:
    # revertrisk was sent lang "en" (the default `--lang`): the enwiki revision's score.
    p = emulated_p_true(model, rev, wiki="enwiki" if revertrisk else "")
    probability = (
        [("true", p), ("false", round(1 - p, 4))]
        if revertrisk
        else [("false", round(1 - p, 4)), ("true", p)]
    )
    return {
        "prediction": p > 0.5,
        "probability": probability,
        "model_version": version,
        "error": None,
        "error_message": None,
    }


def expected_row(rev: int) -> dict[str, Any]:
    return {
        "rev_id": rev,
        "enwiki-damaging": binary("enwiki-damaging", rev, version="0.5.1"),
        "enwiki-goodfaith": binary("enwiki-goodfaith", rev, version="0.5.1"),
        "revertrisk-language-agnostic": binary(
            "revertrisk-language-agnostic", rev, version="3", revertrisk=True
        ),
    }


def rows_by_rev(path: Path) -> dict[int, dict[str, Any]]:
    rows = pq.read_table(path).to_pylist()
    by_rev = {row["rev_id"]: row for row in rows}
    assert len(by_rev) == len(rows), "one row per distinct rev_id"
    return by_rev


def score_args(inp: Path, out: Path, base_url: str, *extra: str) -> list[str | Path]:
    models = [arg for m in MODELS for arg in ("-m", m)]
    return [
        "score",
        inp,
        "-o",
        out,
        *models,
        "--base-url",
        base_url,
        "--rate",
        "5000/s",
        "-q",
        *extra,
    ]


def check_scores(out: Path, distinct: list[int]) -> None:
    rows = rows_by_rev(out)
    assert sorted(rows) == sorted(distinct + [UNKNOWN])
    for rev in distinct:
        assert rows[rev] == expected_row(rev)
    unknown = rows[UNKNOWN]
    assert unknown["enwiki-damaging"]["error"] == "not_found"
    assert unknown["enwiki-goodfaith"]["error"] == "not_found"
    assert unknown["revertrisk-language-agnostic"]["error"] == "not_found"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_scores_three_models_into_one_row_per_revision(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    distinct = list(range(1000, 1100))
    ids = distinct + [UNKNOWN] + distinct[:30]
    if fmt == "parquet":
        inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(ids, pa.int64())})
    else:
        inp = tmp_path / "in.csv"
        inp.write_text("rev_id,title\n" + "".join(f"{i},Page {i}\n" for i in ids))
    out = tmp_path / "out.parquet"
    with emulator() as (emu, base_url):
        code, err = run(capsys, *score_args(inp, out, base_url, "--report", tmp_path / "r.json"))
    assert code == 0, err
    check_scores(out, distinct)
    # Duplicates cost nothing; revertrisk went in batches of 20 (101 revisions -> 6).
    assert emu.stats.requests == 2 * 101 + 6
    assert max(emu.stats.answered.values()) == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rows_read"] == 131 and report["duplicate_rows"] == 30
    assert report["distinct_revisions"] == 101 and report["rows_written"] == 101
    assert report["requests_sent"] == 208
    assert report["scores_per_model"] == dict.fromkeys(MODELS, 100)
    assert report["errors_by_type"] == {"not_found": 3}
    assert set(report["latency_seconds"]) == set(MODELS)


def test_invalid_rows_are_written_with_invalid_input_never_sent(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.csv"
    inp.write_text("rev_id\n5\nabc\n0\n\n6\n")
    out = tmp_path / "out.parquet"
    with emulator() as (emu, base_url):
        code, err = run(
            capsys, "score", inp, "-o", out, "-m", "enwiki-damaging", "--base-url", base_url
        )
    assert code == 0, err
    rows = pq.read_table(out).to_pylist()
    invalid = [
        (r["rev_id"], r["enwiki-damaging"]["error"], r["enwiki-damaging"]["error_message"])
        for r in rows
        if r["enwiki-damaging"]["error"]
    ]
    assert sorted(invalid, key=str) == sorted(
        [
            (None, "invalid_input", "row 2: rev_id 'abc' is not an integer"),
            (0, "invalid_input", "row 3: rev_id 0 is not a positive integer"),
        ],
        key=str,
    )
    assert emu.stats.requests == 2
    assert "invalid rows               2   first: row 2: rev_id 'abc' is not an integer" in err


def test_undeployed_model_becomes_data_and_costs_one_request(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(range(1, 201), pa.int64())})
    out = tmp_path / "out.parquet"
    with emulator(undeployed=frozenset({"svwiki-reverted"})) as (emu, base_url):
        code, err = run(
            capsys,
            "score",
            inp,
            "-o",
            out,
            "-m",
            "enwiki-damaging,svwiki-reverted",
            "--base-url",
            base_url,
            "--concurrency",
            "4",
            "--rate",
            "2000/s",
            "-q",
        )
    assert code == 0, err
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 200
    assert {r["svwiki-reverted"]["error"] for r in rows} == {"model_not_deployed"}
    assert all(r["enwiki-damaging"]["error"] is None for r in rows)
    assert emu.stats.by_status["404"] <= 4  # only what was already in flight


def test_all_models_undeployed_aborts_with_exit_1_and_no_output(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(range(1, 50), pa.int64())})
    out = tmp_path / "out.parquet"
    with emulator(undeployed=frozenset({"svwiki-reverted"})) as (_, base_url):
        code, err = run(
            capsys, "score", inp, "-o", out, "-m", "svwiki-reverted", "--base-url", base_url
        )
    assert code == 1
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("lwbatch: error: every requested model answered 404")
    )
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_a_429_storm_pauses_the_pool_and_every_row_is_scored(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    distinct = list(range(1000, 1300))
    inp = write_parquet(
        tmp_path / "in.parquet", {"rev_id": pa.array(distinct + [UNKNOWN], pa.int64())}
    )
    out = tmp_path / "out.parquet"
    with emulator(storm_after=50, storm_seconds=1.0) as (emu, base_url):
        code, err = run(capsys, *score_args(inp, out, base_url, "--concurrency", "16"))
    assert code == 0, err
    check_scores(out, distinct)
    # Only requests already in flight when the storm began meet it: the pool waits.
    assert 1 <= emu.stats.by_status["429"] <= 16
    assert max(emu.stats.answered.values()) == 1


def test_five_percent_503s_are_retried_to_completion(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    distinct = list(range(5000, 5400))
    inp = write_parquet(
        tmp_path / "in.parquet",
        {"rev_id": pa.array(distinct + [UNKNOWN] + distinct[:50], pa.int64())},
    )
    out = tmp_path / "out.parquet"
    with emulator(error_rate=0.05, error_statuses=(503,), seed=3) as (emu, base_url):
        code, err = run(capsys, *score_args(inp, out, base_url, "--report", tmp_path / "r.json"))
    assert code == 0, err
    check_scores(out, distinct)
    report = json.loads((tmp_path / "r.json").read_text())
    failures = emu.stats.by_status["503"]
    assert failures > 0
    minimum = 2 * 401 + 21  # one request per (model, revision); revertrisk in batches of 20
    assert emu.stats.requests == report["requests_sent"] == minimum + failures
    assert max(emu.stats.answered.values()) == 1


def test_rate_holds_in_every_window(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(range(1, 151), pa.int64())})
    out = tmp_path / "out.parquet"
    report = tmp_path / "report.json"
    with emulator() as (emu, base_url):
        code, err = run(
            capsys,
            "score",
            inp,
            "-o",
            out,
            "-m",
            "enwiki-damaging",
            "--base-url",
            base_url,
            "--rate",
            "100/1s",
            "--report",
            report,
            "-q",
        )
    assert code == 0, err
    assert json.loads(report.read_text())["budget"] == "100/1s"
    assert len(emu.stats.arrivals) == 150
    # Where they arrive, loopback and connection set-up add jitter of a few tens of ms.
    assert max_in_window(sorted(emu.stats.arrivals), 0.8) <= 100


async def test_requests_leave_at_exactly_the_rate_in_every_window(
    tmp_path: Path, emulator: EmulatorFactory
) -> None:
    # The limiter's own grant stamps, through on_send: a clock read after a request
    # left could land a thread switch later than its grant.
    granted: list[float] = []
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(range(1, 151), pa.int64())})
    with emulator() as (emu, base_url):
        await score_file_async(
            inp,
            tmp_path / "out.parquet",
            models=["enwiki-damaging"],
            rate="100/1s",
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
            hooks=Hooks(on_send=granted.append),
        )
    assert len(granted) == len(emu.stats.arrivals) == 150
    assert max_in_window(sorted(granted), 1.0) == 100


def test_token_never_reaches_output_report_or_logs(
    tmp_path: Path,
    emulator: EmulatorFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "lw-token-7d9f1e2c"
    monkeypatch.setenv("LIFTWING_TOKEN", secret)
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2, 3, 0], pa.int64())})
    out = tmp_path / "out.parquet"
    with emulator(token=secret) as (emu, base_url):
        code, err = run(
            capsys,
            "score",
            inp,
            "-o",
            out,
            "-m",
            "enwiki-damaging",
            "--base-url",
            base_url,
            "--report",
            tmp_path / "r.json",
        )
    assert code == 0, err
    assert emu.stats.by_status["200"] == 3  # the token was sent, as the Authorization header
    for artefact in (out, tmp_path / "r.json"):
        assert secret.encode() not in artefact.read_bytes()
    assert secret not in err
    monkeypatch.setenv("LIFTWING_TOKEN", "wrong-" + secret)
    with emulator(token=secret) as (_, base_url):
        code, err = run(
            capsys,
            "score",
            inp,
            "-o",
            tmp_path / "o2.parquet",
            "-m",
            "enwiki-damaging",
            "--base-url",
            base_url,
        )
    assert code == 1
    assert "401 Unauthorized" in err and secret not in err
    assert not (tmp_path / "o2.parquet").exists()
    for artefact in tmp_path.rglob("*"):
        if artefact.is_file():
            assert secret.encode() not in artefact.read_bytes(), artefact


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def corrupt_parquet(directory: Path) -> Path:
    path = write_parquet(directory / "a.parquet", {"rev_id": pa.array(range(1, 5001), pa.int64())})
    data = bytearray(path.read_bytes())
    data[64:4000] = bytes(3936)  # the footer survives; the data pages do not
    path.write_bytes(bytes(data))
    return path


def one_row_csv(directory: Path) -> Path:
    return write_bytes(directory / "a.csv", b"rev_id\n1\n")


BAD_INPUTS: list[tuple[str, Any, list[str], int, str]] = [
    ("missing column", lambda d: write_bytes(d / "a.csv", b"id\n1\n"), [], 2, "no column 'rev_id'"),
    (
        "wrong type",
        lambda d: write_parquet(d / "a.parquet", {"rev_id": pa.array([True])}),
        [],
        2,
        "has type bool",
    ),
    ("empty file", lambda d: write_bytes(d / "a.parquet", b""), [], 2, "is empty"),
    (
        "header only",
        lambda d: write_bytes(d / "a.csv", b"rev_id\n"),
        [],
        2,
        "has a header but no rows",
    ),
    (
        "truncated parquet",
        lambda d: write_bytes(d / "a.parquet", b"PAR1\x15\x00"),
        [],
        2,
        "not a readable Parquet file",
    ),
    (
        "unknown extension",
        lambda d: write_bytes(d / "a.json", b"[]"),
        [],
        2,
        "unknown file type '.json'",
    ),
    ("nonexistent", lambda d: d / "nope.csv", [], 2, "no such file"),
    ("directory", lambda d: d, [], 2, "is a directory"),
    (
        "unknown model",
        one_row_csv,
        ["-m", "enwiki-damagin"],
        2,
        "unknown model 'enwiki-damagin'",
    ),
    (
        "bad rate",
        one_row_csv,
        ["--rate", "fast"],
        2,
        "--rate 'fast' is not N/PERIOD",
    ),
    (
        "zero concurrency",
        one_row_csv,
        ["--concurrency", "0"],
        2,
        "--concurrency must be >= 1",
    ),
    (
        "empty token file",
        one_row_csv,
        ["--token-file", "EMPTY"],
        2,
        "is empty; put the bearer token in it",
    ),
    (
        "missing token file",
        one_row_csv,
        ["--token-file", "/nonexistent/t"],
        2,
        "--token-file /nonexistent/t: cannot read it",
    ),
    (
        "base url without scheme",
        one_row_csv,
        ["--base-url", "127.0.0.1:8080"],
        2,
        "must be an absolute http(s) URL",
    ),
    (
        "unknown tier",
        one_row_csv,
        ["--tier", "gold"],
        2,
        "'gold'",
    ),
    (
        "rev_id all text",
        lambda d: write_bytes(d / "a.csv", b"rev_id\nabc\nx1\n"),
        [],
        2,
        "no row can be sent",
    ),
    (
        "rev_id all fractional floats",
        lambda d: write_parquet(d / "a.parquet", {"rev_id": pa.array([1.5, 2.25])}),
        [],
        2,
        "no row can be sent",
    ),
    (
        "rev_id all negative",
        lambda d: write_bytes(d / "a.csv", b"rev_id\n-1\n-7\n"),
        [],
        2,
        "is not a positive integer",
    ),
    (
        "rev_id all zero",
        lambda d: write_bytes(d / "a.csv", b"rev_id\n0\n0\n"),
        [],
        2,
        "is not a positive integer",
    ),
    (
        "rev_id all null",
        lambda d: write_parquet(d / "a.parquet", {"rev_id": pa.array([None, None], pa.int64())}),
        [],
        2,
        "no row can be sent",
    ),
    (
        "rev_id beyond int64",
        lambda d: write_bytes(d / "a.csv", b"rev_id\n99999999999999999999\n"),
        [],
        2,
        "no row can be sent",
    ),
    ("corrupt parquet pages", corrupt_parquet, [], 2, "unreadable after row 0"),
    (
        "nothing listening at the base URL",
        lambda d: write_bytes(
            d / "a.csv", b"rev_id\n" + b"".join(b"%d\n" % i for i in range(1, 41))
        ),
        [],
        1,
        "cannot reach http://127.0.0.1:9: connection refused (10 attempts in a row, none answered)",
    ),
    (
        "negative concurrency",
        one_row_csv,
        ["--concurrency", "-4"],
        2,
        "--concurrency must be >= 1, got -4",
    ),
    ("zero rate", one_row_csv, ["--rate", "0/s"], 2, "--rate '0/s'"),
    ("negative timeout", one_row_csv, ["--timeout", "-1"], 2, "--timeout must be > 0 seconds"),
    (
        "token with whitespace",
        one_row_csv,
        ["--token-file", "SPACED"],
        2,
        "the token is empty or contains whitespace",
    ),
    (
        "token over plain http",
        one_row_csv,
        ["--token-file", "TOKEN", "--base-url", "http://liftwing.invalid"],
        2,
        "refusing to send the token over plain http to http://liftwing.invalid",
    ),
    (
        "base url with query",
        one_row_csv,
        ["--base-url", "http://127.0.0.1:9/?x=1"],
        2,
        "must not have a query",
    ),
    (
        "base url with credentials",
        one_row_csv,
        ["--base-url", "https://user:pw@liftwing.invalid"],
        2,
        "must not hold credentials",
    ),
    (
        "internal and base url",
        one_row_csv,
        ["--internal"],
        2,
        "give the endpoint once: --endpoint (or one of its old spellings --base-url, "
        "--internal, --internal-staging)",
    ),
    (
        "model with a path",
        one_row_csv,
        ["-m", "enwiki-damaging/../admin"],
        2,
        "unknown model 'enwiki-damaging/../admin'",
    ),
    (
        "contact on two lines",
        one_row_csv,
        ["--contact", "me@example.org\r\nX-Evil: 1"],
        2,
        "--contact must be a single line",
    ),
    (
        "output is the input",
        lambda d: write_parquet(d / "out.parquet", {"rev_id": pa.array([1], pa.int64())}),
        ["-o", "INPUT"],
        2,
        "is the input file",
    ),
    ("output not parquet", one_row_csv, ["-o", "CSVOUT"], 2, "name the file *.parquet, *.jsonl"),
    ("output directory missing", one_row_csv, ["-o", "NODIR"], 1, "its directory does not exist"),
]


@pytest.mark.parametrize(
    ("case", "make", "extra", "code", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_gets_one_line_and_no_output(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    make: Any,
    extra: list[str],
    code: int,
    message: str,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    inp = make(work)
    (tmp_path / "EMPTY").write_text("\n")
    (tmp_path / "SPACED").write_text("abc def\n")
    (tmp_path / "TOKEN").write_text("abc123\n")
    out = tmp_path / "out.parquet"
    places = {
        "EMPTY": tmp_path / "EMPTY",
        "SPACED": tmp_path / "SPACED",
        "TOKEN": tmp_path / "TOKEN",
        "INPUT": inp,
        "CSVOUT": tmp_path / "out.csv",
        "NODIR": tmp_path / "no" / "out.parquet",
    }
    extra = [str(places.get(e, e)) for e in extra]
    models = [] if "-m" in extra else ["-m", "enwiki-damaging"]
    exit_code, err = run(
        capsys, "score", inp, "-o", out, *models, "--base-url", "http://127.0.0.1:9", *extra
    )
    assert exit_code == code
    # A run that starts says what the whole input costs (INFO); nothing else but the error.
    lines = [line for line in err.strip().splitlines() if not line.startswith("lwbatch: INFO: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("lwbatch: error: ") and message in lines[0]
    assert "Traceback" not in err
    assert not out.exists()
    assert not list(tmp_path.rglob(".*"))  # no journal, temporary or lock file


def test_unwritable_output_aborts_with_exit_1_before_any_request(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1], pa.int64())})
    with emulator() as (emu, base_url):
        code, err = run(
            capsys,
            "score",
            inp,
            "-o",
            tmp_path / "no" / "o.parquet",
            "-m",
            "enwiki-damaging",
            "--base-url",
            base_url,
        )
        code2, err2 = run(
            capsys,
            "score",
            inp,
            "-o",
            tmp_path / "o.parquet",
            "-m",
            "enwiki-damaging",
            "--base-url",
            base_url,
            "--internal",
        )
    assert (
        code == 1
        and err.strip()
        == f"lwbatch: error: {tmp_path / 'no' / 'o.parquet'}: its directory does not exist"
    )
    assert code2 == 2 and "give the endpoint once: --endpoint" in err2
    assert emu.stats.requests == 0


def test_output_must_be_parquet_and_not_the_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1], pa.int64())})
    code, err = run(
        capsys, "score", inp, "-o", inp, "-m", "enwiki-damaging", "--base-url", "http://127.0.0.1:9"
    )
    assert (code, "is the input file" in err) == (2, True)
    code, err = run(capsys, "score", inp, "-o", tmp_path / "o.csv", "-m", "enwiki-damaging")
    assert (code, "name the file *.parquet" in err) == (2, True)


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("score", "emulate", "demo"):
        assert main([command, "--help"]) == 0
        assert "Example" in capsys.readouterr().out or command == "demo"


def test_insecure_warns_and_still_scores(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2], pa.int64())})
    with emulator() as (_, base_url):
        code, err = run(
            capsys,
            "score",
            inp,
            "-o",
            tmp_path / "o.parquet",
            "-m",
            "enwiki-damaging",
            "--base-url",
            base_url,
            "--insecure",
            "-q",
        )
    assert code == 0
    # -q leaves warnings, not info lines (such as the estimate) or the summary.
    assert err == (
        "lwbatch: WARNING: --insecure: TLS certificates are not verified (the token "
        "endpoint's neither); use it only against staging\n"
    )


def test_unlimited_rate_is_refused_for_the_public_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1], pa.int64())})
    out = tmp_path / "out.parquet"
    code, err = run(capsys, "score", inp, "-o", out, "-m", "enwiki-damaging", "--rate", "unlimited")
    assert code == 2
    assert err.strip() == (
        "lwbatch: error: --rate unlimited: the public API gateway enforces a tier budget "
        "(give a --tier or N/PERIOD); unlimited is for the internal endpoints or another "
        "--endpoint"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_unlimited_rate_against_the_emulator_scores_everything(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    distinct = list(range(1000, 1200))
    inp = write_parquet(
        tmp_path / "in.parquet", {"rev_id": pa.array(distinct + [UNKNOWN], pa.int64())}
    )
    out = tmp_path / "out.parquet"
    with emulator() as (emu, base_url):
        args = [a for a in score_args(inp, out, base_url, "--rate", "unlimited") if a != "-q"]
        code, err = run(capsys, *args)
    assert code == 0, err
    check_scores(out, distinct)
    assert "budget unlimited" in err
    assert "limit 64 (no budget to reach: the client's CPU is the bound)" in err
    assert "429" not in emu.stats.by_status
