"""The command line's option groups: one endpoint flag, the --config profile, the flags
plan shares with score, and help that matches the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from lwbatch.cli import main
from tests.conftest import EmulatorFactory, write_parquet

README = Path(__file__).parent.parent / "README.md"


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def revisions(tmp_path: Path, count: int = 5) -> Path:
    ids = pa.array(range(1, count + 1), pa.int64())
    return write_parquet(tmp_path / "in.parquet", {"rev_id": ids})


def test_endpoint_takes_a_keyword_or_a_url(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = revisions(tmp_path)
    plan = ["plan", inp, "-m", "enwiki-damaging", "--rate", "unlimited", "--json"]
    # The public gateway keeps a budget; the internal endpoint has none (plan sends
    # nothing, so no request goes to either).
    code, _, err = run(capsys, *plan, "--endpoint", "public")
    assert (code, err.strip()) == (
        2,
        "lwbatch: error: --rate unlimited: the public API gateway enforces a tier budget "
        "(give a --tier or N/PERIOD); unlimited is for the internal endpoints or another "
        "--endpoint",
    )
    code, out, _ = run(capsys, *plan, "--endpoint", "internal")
    assert code == 0 and json.loads(out)["budget"]["describe"] == "unlimited"
    code, out, _ = run(capsys, *plan, "--endpoint", "internal-staging")
    assert code == 0
    with emulator() as (emu, base_url):
        code, _, err = run(
            capsys, "score", inp, "-o", tmp_path / "o.parquet", "-m", "enwiki-damaging",
            "--endpoint", base_url, "--rate", "1000/s", "-q",
        )  # fmt: skip
    assert code == 0, err
    assert emu.stats.requests == 5


def write_profile(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_profile_gives_the_defaults_and_flags_win(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = revisions(tmp_path)
    folder = tmp_path / "profile"
    folder.mkdir()
    (folder / "token").write_text("s3cret\n")
    report = tmp_path / "report.json"
    with emulator(token="s3cret") as (emu, base_url):
        profile = write_profile(
            folder / "lw.toml",
            f'endpoint = "{base_url}"\nrate = "500/s"\ntoken-file = "token"\n'
            'contact = "me@example.org"\ntimeout = 20\n',
        )
        score = ["score", inp, "-m", "enwiki-damaging", "-q", "--report", report]
        code, _, err = run(capsys, *score, "-o", tmp_path / "a.parquet", "--config", profile)
        assert code == 0, err
        # Read from the profile: the endpoint, the token (beside it), the budget.
        assert emu.stats.requests == 5
        assert json.loads(report.read_text())["budget"] == "500/1s"
        code, _, err = run(
            capsys, *score, "-o", tmp_path / "b.parquet", "--config", profile, "--rate", "200/s"
        )
        assert code == 0, err
        assert json.loads(report.read_text())["budget"] == "200/1s"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "restart = true\n",
            "'restart' is not a setting a profile holds; it holds endpoint, host-routing, "
            "token-file, credentials, token-url, contact, timeout, insecure, tier, rate, "
            "state-dir",
        ),
        ("rate = [1, 2]\n", "rate must be a single value"),
        ('timeout = "abc"\n', "timeout 'abc': 'abc' is not a valid float."),
        ('rate = "fast"\n', "rate: --rate 'fast' is not N/PERIOD"),
        ('token-file = "nope"\n', "token-file {folder}/nope: no such file"),
        ("rate = \n", "not TOML"),
    ],
)
def test_a_bad_profile_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    profile = write_profile(tmp_path / "p.toml", text)
    message = message.format(folder=tmp_path)
    code, _, err = run(
        capsys, "score", revisions(tmp_path), "-o", tmp_path / "o.parquet",
        "-m", "enwiki-damaging", "--config", profile,
    )  # fmt: skip
    assert code == 2
    assert err.startswith(f"lwbatch: error: --config {profile}: {message}")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.parquet").exists()


def test_a_missing_profile_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", revisions(tmp_path), "-m", "enwiki-damaging",
                       "--config", tmp_path / "none.toml")  # fmt: skip
    assert (code, err) == (2, f"lwbatch: error: --config {tmp_path / 'none.toml'}: no such file\n")


def test_a_state_dir_without_a_shared_budget_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "score", revisions(tmp_path), "-o", tmp_path / "o.parquet",
        "-m", "enwiki-damaging", "--no-shared-budget", "--state-dir", tmp_path,
    )  # fmt: skip
    assert code == 2
    assert err == (
        "lwbatch: error: --state-dir is where a shared budget is kept, and "
        "--no-shared-budget shares none: give one or the other\n"
    )


def visible_flags(command: str) -> set[str]:
    from lwbatch.cli.app import cli

    options = cli.commands[command].params
    return {
        opt
        for param in options
        if not getattr(param, "hidden", False)
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--") and opt != "--help"
    }


@pytest.mark.parametrize("command", ["score", "plan", "bench"])
def test_every_flag_of_the_help_is_in_the_readme(command: str) -> None:
    readme = set(re.findall(r"--[a-z][a-z0-9-]*", README.read_text()))
    assert visible_flags(command) - readme == set()


def test_plan_takes_every_flag_of_score_that_changes_what_is_sent() -> None:
    # What score sends when nothing fails depends on the models, the input's keys, where and as whom
    # requests go, and the budget's choice; not on the output, pacing or progress.
    not_for_plan = {
        "--output", "--format", "--keep-columns", "--concurrency", "--max-attempts",
        "--no-shared-budget",
        "--state-dir", "--restart", "--retry-failed", "--no-retry-failed", "--report",
        "--quiet", "--log-json", "--progress-every", "--grace", "--engine", "--master",
        "--slots", "--input-table", "--output-table", "--progress", "--spark-log",
        "--commit-every",
    }  # fmt: skip
    assert visible_flags("score") - not_for_plan <= visible_flags("plan")


def test_score_help_lists_the_models_first_and_groups_by_concern(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        from lwbatch.cli.app import cli

        cli.main(["score", "--help"], prog_name="lwbatch")
    out = capsys.readouterr().out
    headings = [line[:-1] for line in out.splitlines() if re.fullmatch(r"[A-Z][\w ,()-]*:", line)]
    assert headings == [
        "Models",
        "Output",
        "Input",
        "Connection",
        "Budget",
        "Pacing",
        "Resume and cache",
        "Progress and report",
        "Spark (with --engine spark)",
        "Profile",
        "Other options",
    ]


def test_max_attempts_bounds_the_requests_a_failing_revision_takes(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = revisions(tmp_path, 3)
    with emulator(error_rate=1.0, error_statuses=(500,)) as (emu, base_url):
        code, _, err = run(
            capsys, "score", inp, "-o", tmp_path / "o.parquet", "-m", "enwiki-damaging",
            "--endpoint", base_url, "--rate", "1000/s", "--max-attempts", "2", "-q",
        )  # fmt: skip
    assert code == 0, err
    assert emu.stats.requests == 3 * 2
    code, _, err = run(capsys, "plan", inp, "-m", "enwiki-damaging")
    assert code == 0  # plan has no use for it, and does not take it
    code, _, err = run(capsys, "score", inp, "-o", tmp_path / "p.parquet",
                       "-m", "enwiki-damaging", "--max-attempts", "0")  # fmt: skip
    assert (code, err) == (2, "lwbatch: error: --max-attempts must be >= 1, got 0\n")


def test_flags_typed_win_over_the_profile_even_where_they_exclude_its_settings(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = revisions(tmp_path)
    profile = write_profile(tmp_path / "p.toml", 'rate = "1000/h"\nstate-dir = "state"\n')
    code, out, _ = run(capsys, "plan", inp, "-m", "enwiki-damaging", "--json",
                       "--config", profile, "--tier", "enterprise")  # fmt: skip
    assert code == 0
    assert json.loads(out)["budget"]["describe"] == "200000/3600s and 200/1s"
    code, out, _ = run(capsys, "plan", inp, "-m", "enwiki-damaging", "--json",
                       "--config", profile)  # fmt: skip
    assert json.loads(out)["budget"]["describe"] == "1000/3600s"
    # --rate typed beside --tier overrides it, as its help says.
    code, out, _ = run(capsys, "plan", inp, "-m", "enwiki-damaging", "--json",
                       "--tier", "enterprise", "--rate", "10/s")  # fmt: skip
    assert json.loads(out)["budget"]["describe"] == "10/1s"
    with emulator() as (emu, base_url):
        code, _, err = run(
            capsys, "score", inp, "-o", tmp_path / "o.parquet", "-m", "enwiki-damaging",
            "--config", profile, "--endpoint", base_url, "--no-shared-budget", "-q",
            "--rate", "100/s",
        )  # fmt: skip
    assert code == 0, err
    assert emu.stats.requests == 5
    assert not (tmp_path / "state").exists()  # the profile's state-dir went unused


def test_a_profile_key_for_another_command_is_left_be(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # plan has no --state-dir; the keys after it still count.
    profile = write_profile(tmp_path / "p.toml", 'state-dir = "s"\nrate = "10/s"\n')
    code, out, _ = run(capsys, "plan", revisions(tmp_path), "-m", "enwiki-damaging", "--json",
                       "--config", profile)  # fmt: skip
    assert code == 0 and json.loads(out)["budget"]["describe"] == "10/1s"
