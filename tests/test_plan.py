"""`lwbatch plan`: the cost of a job before it sends anything, equal to what `score`
then sends when nothing fails."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from lwbatch import Budget, Endpoint, Rate, Tier, plan_file, score_file
from lwbatch.plan import Plan
from lwbatch.settings import Connection
from lwbatch.tokens import choose_budget
from tests.conftest import EmulatorFactory, write_parquet

MODELS = ["enwiki-damaging", "revertrisk-language-agnostic"]


def small(tmp_path: Path) -> Path:
    return write_parquet(
        tmp_path / "in.parquet",
        {
            "rev_id": pa.array([1, 2, 3, 1, 0, 4, 5], pa.int64()),
            "lang": ["en", "en", "de", "en", "en", "fr", "en"],
        },
    )


def test_a_plan_counts_rows_keys_and_requests(tmp_path: Path) -> None:
    planned = plan_file(small(tmp_path), models=MODELS, rate=Budget.from_rate(Rate(100, 1.0)))
    # enwiki-damaging: the three enwiki revisions; de and fr are not its wiki.
    # revertrisk: one batch per wiki (en, de, fr).
    assert planned.to_dict() == {
        "rows": 7,
        "distinct": 5,
        "invalid": 1,
        "duplicates": 1,
        "requests": {"enwiki-damaging": 3, "revertrisk-language-agnostic": 3},
        "answered_without_request": {"enwiki-damaging": 2, "revertrisk-language-agnostic": 0},
        "cached": {"enwiki-damaging": 0, "revertrisk-language-agnostic": 0},
        "total_requests": 6,
        "budget": {
            "requests": 100,
            "period_s": 1.0,
            "source": "rate",
            "reason": "as given",
            "describe": "100/1s",
        },
        "hours": {
            "anonymous": round(6 / (50_000 / 3600) / 3600, 4),
            "authenticated": round(6 / (100_000 / 3600) / 3600, 4),
            "enterprise": round(6 / (200_000 / 3600) / 3600, 4),
            "budget": round(6 / 100 / 3600, 4),
        },
    }


def test_the_estimate_line_gives_hours_at_each_tier() -> None:
    planned = Plan(
        models=("m",),
        budget=choose_budget(tier=Tier.AUTHENTICATED),
        requests={"m": 2_000_000},
    )
    assert planned.estimate() == (
        "2,000,000 requests: 40 h 00 m anonymous, 20 h 00 m authenticated, 10 h 00 m "
        "enterprise; 20 h 00 m at this run's budget 100000/3600s and 100/1s"
    )


def mixed(tmp_path: Path) -> Path:
    """300 rows of three wikis, 10% repeated, with invalid ids and empty languages."""
    langs = ["en", "de", "fr", ""]
    ids = [*range(1, 271), *range(1, 28), 0, -5, 9]
    return write_parquet(
        tmp_path / "mixed.parquet",
        {
            "rev_id": pa.array(ids, pa.int64()),
            "lang": [langs[i % 4] for i in range(len(ids))],
        },
    )


@pytest.mark.parametrize("source", ["small", "mixed"])
def test_the_plan_is_what_score_sends(
    source: str, tmp_path: Path, emulator: EmulatorFactory
) -> None:
    inp = small(tmp_path) if source == "small" else mixed(tmp_path)
    models = [*MODELS, "{wiki}-goodfaith"]
    planned = plan_file(inp, models=models)
    with emulator() as (emu, base_url):
        report = score_file(
            inp,
            tmp_path / "out.parquet",
            models=models,
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url)),
        )
        by_model = dict(emu.stats.by_model)
    assert planned.total_requests == report.requests_sent == emu.stats.requests
    assert (planned.rows, planned.distinct, planned.invalid, planned.duplicates) == (
        report.rows_read,
        report.distinct_revisions,
        report.invalid_rows,
        report.duplicate_rows,
    )
    goodfaith = sum(n for m, n in by_model.items() if m.endswith("-goodfaith"))
    assert planned.requests == {
        "enwiki-damaging": by_model.get("enwiki-damaging", 0),
        "revertrisk-language-agnostic": by_model["revertrisk-language-agnostic"],
        "{wiki}-goodfaith": goodfaith,
    }


def test_lwbatch_plan_json_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lwbatch.cli import main

    inp = small(tmp_path)
    args = ["plan", str(inp), "-m", "enwiki-damaging,revertrisk-language-agnostic"]
    assert main([*args, "--json", "--tier", "enterprise"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["total_requests"], data["budget"]["source"], data["budget"]["requests"]) == (
        6,
        "tier",
        200_000,
    )
    assert main([*args, "--rate", "6/h"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-2:] == [
        "budget: 6/3600s (rate: as given)",
        "6 requests: 0 h 00 m anonymous, 0 h 00 m authenticated, 0 h 00 m enterprise; "
        "1 h 00 m at this run's budget 6/3600s",
    ]


def test_plan_and_score_take_the_budget_the_credentials_token_gives(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    emulator: EmulatorFactory,
) -> None:
    from lwbatch.cli import main

    monkeypatch.delenv("LIFTWING_TOKEN", raising=False)
    inp = small(tmp_path)
    args = ["plan", str(inp), "-m", "enwiki-damaging", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["budget"]["requests"] == 50_000
    claims = {"aud": "c0ffee", "ratelimit": {"requests_per_unit": 5000, "unit": "HOUR"}}
    options = {"oauth_client": ("c0ffee", "s3cret-value"), "token_claims": claims}
    with emulator(**options) as (emu, base_url):
        monkeypatch.setenv("LIFTWING_CLIENT_ID", "c0ffee")
        monkeypatch.setenv("LIFTWING_CLIENT_SECRET", "s3cret-value")
        url = f"{base_url}/oauth2/access_token"
        code = main([*args, "--token-url", url])
        out = capsys.readouterr().out
        assert code == 0, out
        budget = json.loads(out)["budget"]
        assert (budget["requests"], budget["source"]) == (5000, "token")
        # One revision: at 5,000 an hour a second request would wait 0.7 s.
        one = write_parquet(tmp_path / "one.parquet", {"rev_id": pa.array([1], pa.int64())})
        report = tmp_path / "r.json"
        code = main(
            ["score", str(one), "-o", str(tmp_path / "o.parquet"), "-m", "enwiki-damaging"]
            + ["--base-url", base_url, "--token-url", url, "--report", str(report), "-q"]
        )
        assert code == 0, capsys.readouterr().err
        assert json.loads(report.read_text())["budget"] == "5000/3600s and 15/1s"
        # The library, too, asks for the token before choosing the budget.
        from lwbatch.oauth import Credentials

        creds = Credentials(client_id="c0ffee", client_secret="s3cret-value", token_url=url)
        run = score_file(
            one,
            tmp_path / "p.parquet",
            models=["enwiki-damaging"],
            connection=Connection(endpoint=Endpoint(base_url=base_url), credentials=creds),
        )
        assert run.budget_source == "token"
        issued = emu.stats.tokens_issued
    assert issued == 3
    assert "s3cret-value" not in out


def test_plan_checks_kept_columns_as_score_does(tmp_path: Path) -> None:
    from lwbatch import Files, InputError, plan_file

    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2], pa.int64())})
    with pytest.raises(InputError, match=r"no column 'nope' for `keep_columns`"):
        plan_file(inp, models=["enwiki-damaging"], files=Files(keep_columns=["nope"]))


def test_plan_refuses_an_input_of_which_no_row_can_be_sent_as_score_does(tmp_path: Path) -> None:
    from lwbatch import InputError

    inp = tmp_path / "ids.csv"
    inp.write_text("rev_id\nfoo\nbar\n")
    with pytest.raises(InputError) as refused:
        plan_file(inp, models=["enwiki-damaging"])
    assert str(refused.value) == (
        f"{inp}: no row can be sent (2 rows; first: row 1: rev_id 'foo' is not an integer); "
        "check `id_column`, the wiki column and the file"
    )
