"""Budgets and facts read from a token's JWT payload (never verified, never shown)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from lwbatch import Budget, Rate, Tier, Token
from lwbatch.tokens import TokenClaims, choose_budget


def jwt(payload: Any) -> Token:
    """A token shaped as the gateway's: header.payload.signature, base64url, unpadded."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    header = part(b'{"alg":"RS256","typ":"JWT"}')
    return Token(f"{header}.{part(json.dumps(payload).encode())}.{part(b'signature')}")


def test_claims_are_read_from_the_payload() -> None:
    token = jwt(
        {
            "aud": "0f4e2c5a9b",
            "sub": "12345",
            "exp": 1_800_000_000,
            "iat": 1_799_985_600,
            "ratelimit": {"requests_per_unit": 5000, "unit": "HOUR"},
            "rlc": "authed-user",
        }
    )
    assert TokenClaims.of(token) == TokenClaims(
        client_id="0f4e2c5a9b",
        subject="12345",
        expires=datetime(2027, 1, 15, 8, 0, tzinfo=UTC),
        issued=datetime(2027, 1, 15, 4, 0, tzinfo=UTC),
        ratelimit=Rate(5000, 3600.0),
        rate_class="authed-user",
    )


@pytest.mark.parametrize(
    ("payload", "client_id", "subject"),
    [
        ({"aud": {"id": "x"}, "sub": {"id": 1}}, None, None),
        ({"aud": ["a1", 7], "sub": 42}, "a1", "42"),
        ({"aud": "", "sub": None}, None, None),
    ],
)
def test_claims_of_the_wrong_type_are_left_out(
    payload: dict[str, Any], client_id: str | None, subject: str | None
) -> None:
    claims = TokenClaims.of(jwt(payload))
    assert claims is not None and (claims.client_id, claims.subject) == (client_id, subject)


def test_a_list_audience_and_absent_claims() -> None:
    claims = TokenClaims.of(jwt({"aud": ["a1", "b2"]}))
    assert claims == TokenClaims(
        client_id="a1, b2",
        subject=None,
        expires=None,
        issued=None,
        ratelimit=None,
        rate_class=None,
    )


@pytest.mark.parametrize(
    "value",
    [
        "plain-opaque-token",
        "a.b",
        "a.b.c.d",
        "eyJhbGciOiJIUzI1NiJ9.!!!.sig",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig",  # "not json"
        "eyJhbGciOiJIUzI1NiJ9.WzEsMl0.sig",  # [1,2]: not an object
    ],
)
def test_a_token_that_is_not_a_jwt_has_no_claims(value: str) -> None:
    assert TokenClaims.of(Token(value)) is None


@pytest.mark.parametrize(
    ("claim", "rate"),
    [
        ({"requests_per_unit": 5000, "unit": "HOUR"}, Rate(5000, 3600.0)),
        ({"requests_per_unit": 100, "unit": "minute"}, Rate(100, 60.0)),
        ({"requests_per_unit": 0, "unit": "HOUR"}, None),
        ({"requests_per_unit": True, "unit": "HOUR"}, None),
        ({"requests_per_unit": "5000", "unit": "HOUR"}, None),
        ({"requests_per_unit": 5000, "unit": "FORTNIGHT"}, None),
        ({"requests_per_unit": 5000.0, "unit": "HOUR"}, Rate(5000, 3600.0)),
        ({"requests_per_unit": 5000.5, "unit": "HOUR"}, None),
        ({"requests_per_unit": 5000}, None),
        ("5000/h", None),
    ],
)
def test_only_a_well_formed_ratelimit_claim_counts(claim: Any, rate: Rate | None) -> None:
    claims = TokenClaims.of(jwt({"ratelimit": claim}))
    assert claims is not None and claims.ratelimit == rate


def test_an_explicit_budget_or_tier_wins_over_the_token() -> None:
    token = jwt({"rlc": "established-user"})
    budget = Budget.from_rate(Rate(10, 1.0))
    assert choose_budget(budget=budget, tier=Tier.ANONYMOUS, token=token).budget == budget
    chosen = choose_budget(tier=Tier.ANONYMOUS, token=token)
    assert (chosen.budget, chosen.source, chosen.reason) == (
        Budget.for_tier(Tier.ANONYMOUS),
        "tier",
        "the anonymous tier, as given",
    )


@pytest.mark.parametrize(
    ("token", "windows", "source", "reason", "doubtful"),
    [
        (
            None,
            (Rate(50_000, 3600.0), Rate(15, 1.0)),
            "tier",
            "anonymous: no token",
            False,
        ),
        (
            jwt({"ratelimit": {"requests_per_unit": 5000, "unit": "HOUR"}}),
            (Rate(5000, 3600.0), Rate(15, 1.0)),
            "token",
            "the token's ratelimit claim (5,000 per hour), with the anonymous tier's "
            "per-second cap",
            False,
        ),
        (
            jwt({"ratelimit": {"requests_per_unit": 150_000, "unit": "HOUR"}}),
            (Rate(150_000, 3600.0), Rate(100, 1.0)),
            "token",
            "the token's ratelimit claim (150,000 per hour), with the authenticated tier's "
            "per-second cap",
            False,
        ),
        (
            jwt({"rlc": "established-user", "ratelimit": "junk"}),
            (Rate(200_000, 3600.0), Rate(200, 1.0)),
            "token",
            "the token's rate-limit class 'established-user' (enterprise tier)",
            False,
        ),
        (
            jwt({"rlc": "authed-user"}),
            (Rate(100_000, 3600.0), Rate(100, 1.0)),
            "token",
            "the token's rate-limit class 'authed-user' (authenticated tier)",
            False,
        ),
        (
            jwt({"rlc": "approved-bot"}),
            (Rate(100_000, 3600.0), Rate(100, 1.0)),
            "tier",
            "authenticated: the token's rate-limit class 'approved-bot' is not one lwbatch "
            "knows; give `tier` or `budget` if it allows more",
            True,
        ),
        (
            jwt({"sub": "1"}),
            (Rate(100_000, 3600.0), Rate(100, 1.0)),
            "tier",
            "authenticated: the token names no rate limit",
            False,
        ),
        (
            Token("opaque"),
            (Rate(100_000, 3600.0), Rate(100, 1.0)),
            "tier",
            "authenticated: the token is not a JWT, so it names no rate limit",
            True,
        ),
    ],
)
def test_the_budget_follows_the_token(
    token: Token | None, windows: tuple[Rate, ...], source: str, reason: str, doubtful: bool
) -> None:
    chosen = choose_budget(token=token)
    assert (chosen.budget.windows, chosen.source, chosen.reason, chosen.doubtful) == (
        windows,
        source,
        reason,
        doubtful,
    )


def test_the_summary_and_report_say_which_budget_and_why(
    tmp_path: Any, emulator: Any, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    import pyarrow as pa

    from lwbatch.cli import main
    from tests.conftest import write_parquet

    token = jwt({"aud": "client-key", "rlc": "established-user"})
    monkeypatch.setenv("LIFTWING_TOKEN", token.reveal())
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2], pa.int64())})
    report_path = tmp_path / "r.json"
    with emulator(token=token.reveal()) as (_, base_url):
        code = main(
            ["score", str(inp), "-o", str(tmp_path / "out.parquet"), "-m", "enwiki-damaging"]
            + ["--base-url", base_url, "--report", str(report_path)]
            + ["--cache", str(tmp_path / "c.db")]
        )
    err = capsys.readouterr().err
    assert code == 0, err
    for kept in tmp_path.iterdir():  # output, report, cache (and its WAL)
        assert token.reveal().encode() not in kept.read_bytes(), kept
    report = json.loads(report_path.read_text())
    assert (report["budget"], report["budget_source"], report["budget_reason"]) == (
        "200000/3600s and 200/1s",
        "token",
        "the token's rate-limit class 'established-user' (enterprise tier)",
    )
    assert (
        "budget from" + " " * 22 + "token: the token's rate-limit class 'established-user' "
        "(enterprise tier)\n"
    ) in err
    assert token.reveal() not in err + report_path.read_text()


def test_lwbatch_token_shows_the_claims_never_the_token(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from lwbatch.cli import main

    monkeypatch.delenv("LIFTWING_TOKEN", raising=False)
    token = jwt(
        {
            "aud": "0f4e2c5a9b",
            "sub": "12345",
            "iat": 1_000_000_000,
            "exp": 1_000_003_600,
            "ratelimit": {"requests_per_unit": 5000, "unit": "HOUR"},
        }
    )
    path = tmp_path / "token.txt"
    path.write_text(token.reveal() + "\n")
    assert main(["token", "--token-file", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:2] == ["client id (aud)     0f4e2c5a9b", "subject (sub)       12345"]
    assert lines[2].startswith("issued (iat)        2001-09-09 01:46:40 UTC (")
    assert lines[2].endswith(" ago)") and "expired" not in lines[2]
    assert lines[3].startswith("expires (exp)       2001-09-09 02:46:40 UTC (expired ")
    assert lines[4:] == [
        "rate limit          5,000 per 3600 s",
        "rate-limit class    -",
        "budget              5000/3600s and 15/1s (the token's ratelimit claim (5,000 per "
        "hour), with the anonymous tier's per-second cap)",
        "A tier change takes effect only once the token is issued again: create a new token "
        "after your tier is raised.",
    ]
    assert token.reveal() not in out


def test_lwbatch_token_on_an_opaque_token_and_on_none(
    capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from lwbatch.cli import main

    monkeypatch.setenv("LIFTWING_TOKEN", "opaque-secret")
    assert main(["token"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == [
        "token               not a JWT: lwbatch cannot read its claims",
        "budget              100000/3600s and 100/1s (authenticated: the token is not a JWT, "
        "so it names no rate limit)",
    ]
    assert "opaque-secret" not in out
    monkeypatch.delenv("LIFTWING_TOKEN")
    assert main(["token"]) == 2
    assert capsys.readouterr().err == (
        "lwbatch: error: no token: set LIFTWING_TOKEN or give --token-file\n"
    )


def test_moments_are_said_relative_to_now() -> None:
    from datetime import UTC, datetime

    from lwbatch.cli.commands.token import when

    now = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    at = datetime(2026, 1, 10, 9, 35, tzinfo=UTC)
    assert when(at, now, past="expired") == "2026-01-10 09:35:00 UTC (expired 2 h 25 m ago)"
    assert when(at, now, past="") == "2026-01-10 09:35:00 UTC (2 h 25 m ago)"
    assert when(now, at, past="") == "2026-01-10 12:00:00 UTC (in 2 h 25 m)"
    later = datetime(2026, 1, 13, 15, 0, tzinfo=UTC)
    assert when(later, now, past="") == "2026-01-13 15:00:00 UTC (in 3 d 3 h)"
    assert when(None, now, past="") == "-"
    soon = datetime(2026, 1, 10, 12, 1, 5, tzinfo=UTC)
    assert when(soon, now, past="") == "2026-01-10 12:01:05 UTC (in 1 m 05 s)"


def test_score_warns_when_the_token_has_expired(
    tmp_path: Any, emulator: Any, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    import pyarrow as pa

    from lwbatch.cli import main
    from tests.conftest import write_parquet

    token = jwt({"exp": 1_000_000_000, "rlc": "authed-user"})
    monkeypatch.setenv("LIFTWING_TOKEN", token.reveal())
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2], pa.int64())})
    with emulator(token=token.reveal()) as (_, base_url):
        code = main(
            ["score", str(inp), "-o", str(tmp_path / "out.parquet"), "-m", "enwiki-damaging"]
            + ["--base-url", base_url, "-q"]
        )
    err = capsys.readouterr().err
    assert code == 0, err  # the emulator takes it all the same
    warnings = [line for line in err.splitlines() if line.startswith("lwbatch: WARNING: ")]
    assert warnings == [
        "lwbatch: WARNING: the token expired at 2001-09-09 01:46 UTC: the gateway will refuse "
        "it; put a fresh token in LIFTWING_TOKEN or --token-file"
    ]


def test_score_warns_when_the_token_expires_before_the_run_ends(
    tmp_path: Any, emulator: Any, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from datetime import UTC, datetime

    import pyarrow as pa

    import lwbatch.cli.scoring
    from lwbatch.cli import main
    from tests.conftest import write_parquet

    class OneSecondBefore(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.fromtimestamp(1_000_000_000 - 1, UTC)

    monkeypatch.setattr(lwbatch.cli.scoring, "datetime", OneSecondBefore)
    token = jwt({"exp": 1_000_000_000, "rlc": "authed-user"})
    monkeypatch.setenv("LIFTWING_TOKEN", token.reveal())
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2], pa.int64())})
    with emulator(token=token.reveal()) as (_, base_url):
        # Two requests at 1/s take about 2 s: the token expires after 1.
        code = main(
            ["score", str(inp), "-o", str(tmp_path / "out.parquet"), "-m", "enwiki-damaging"]
            + ["--base-url", base_url, "-q", "--rate", "1/s"]
        )
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("lwbatch: WARNING: ")]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "lwbatch: WARNING: the token expires at 2001-09-09 01:46 UTC, before this run would "
        "end (about "
    )
    assert warnings[0].endswith(
        "UTC): put a fresh token in LIFTWING_TOKEN or --token-file then, and rerun to resume"
    )
