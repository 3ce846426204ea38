"""Tokens over long jobs: OAuth2 client credentials or a refresh token, against the
emulator's token endpoint on 127.0.0.1; a 401 mid-run gets a new token, once."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch.errors import UsageError
from lwbatch.oauth import Credentials
from tests.conftest import EmulatorFactory, write_parquet


def credentials_file(tmp_path: Path, base_url: str, **extra: str) -> Path:
    values = {
        "client_id": "c0ffee",
        "client_secret": "s3cret-value",
        "token_url": f"{base_url}/oauth2/access_token",
        **extra,
    }
    path = tmp_path / "credentials.toml"
    path.write_text("".join(f'{k} = "{v}"\n' for k, v in values.items()))
    return path


def score(tmp_path: Path, base_url: str, *extra: str, rows: int = 100) -> list[str]:
    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array(range(1, rows + 1))})
    return [
        "score", str(inp), "-o", str(tmp_path / "out.parquet"), "-m", "enwiki-damaging",
        "--base-url", base_url, "--rate", "unlimited", "--concurrency", "4", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token", "rotating"])
def test_an_expired_token_is_replaced_mid_run_and_the_request_sent_again(
    grant: str,
    tmp_path: Path,
    emulator: EmulatorFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lwbatch.cli import main

    monkeypatch.delenv("LIFTWING_TOKEN", raising=False)
    extra = {"refresh_token": "r-123"} if grant != "client_credentials" else {}
    # "rotating": each refresh answers with a new refresh token; the old one is refused.
    options = {"oauth_client": ("c0ffee", "s3cret-value"), "token_uses": 30}
    options["rotate_refresh"] = grant == "rotating"
    with emulator(**options, refresh_token="r-123") as (emu, base_url):
        path = credentials_file(tmp_path, base_url, **extra)
        args = score(tmp_path, base_url, "--credentials", str(path))
        code = main([*args, "--report", str(tmp_path / "r.json")])
        err = capsys.readouterr().err
        # One token to start, then one per 30 requests: no 401 was answered twice.
        issued, statuses = emu.stats.tokens_issued, dict(emu.stats.by_status)
    assert code == 0, err
    assert issued == 4
    assert statuses["200"] == 100 and statuses["401"] >= 3
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 100
    assert err.count("401: the token expired or was revoked; a new one came from ") == 3
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["requests_sent"] == 100 + statuses["401"]  # every attempt counts
    for kept in tmp_path.iterdir():
        if kept.is_file() and kept.name != "credentials.toml":
            for secret in (b"emulated-token-", b"emulated-refresh-", b"s3cret-value"):
                assert secret not in kept.read_bytes()
    for secret in ("emulated-token-", "emulated-refresh-", "s3cret-value"):
        assert secret not in err


def test_a_new_token_that_is_refused_too_ends_the_run(
    tmp_path: Path,
    emulator: EmulatorFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lwbatch.cli import main

    monkeypatch.delenv("LIFTWING_TOKEN", raising=False)
    # max_tokens: a client that refreshed for ever would stop at 5 (and fail here).
    options = {"oauth_client": ("c0ffee", "s3cret-value"), "token_uses": 0, "max_tokens": 5}
    with emulator(**options) as (emu, base_url):
        args = score(tmp_path, base_url, "--credentials", str(credentials_file(tmp_path, base_url)))
        code = main(args)
        issued = emu.stats.tokens_issued
    err = capsys.readouterr().err
    assert code == 1
    assert issued == 2  # the first token and one replacement, no more
    assert err.splitlines()[-1] == (
        f"lwbatch: error: 401 Unauthorized from {base_url}/v1/models/enwiki-damaging:predict: "
        "a token just issued by the OAuth2 token endpoint was refused too; check that the "
        "client in --credentials may use this API"
    )


def test_a_client_the_token_endpoint_refuses_stops_before_any_request(
    tmp_path: Path,
    emulator: EmulatorFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lwbatch.cli import main

    monkeypatch.delenv("LIFTWING_TOKEN", raising=False)
    monkeypatch.setenv("LIFTWING_CLIENT_ID", "c0ffee")
    monkeypatch.setenv("LIFTWING_CLIENT_SECRET", "wrong")
    with emulator(oauth_client=("c0ffee", "s3cret-value")) as (emu, base_url):
        url = f"{base_url}/oauth2/access_token"
        code = main(score(tmp_path, base_url, "--token-url", url))
        requests = emu.stats.requests
    assert (code, requests) == (1, 0)
    assert capsys.readouterr().err == (
        f"lwbatch: error: cannot get a token from {url}: HTTP 401 invalid_client; check the "
        "client id, secret and refresh token in --credentials\n"
    )


def test_a_token_endpoint_that_cannot_be_reached_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    import lwbatch.oauth
    from lwbatch.cli import main
    from lwbatch.errors import AuthenticationError

    monkeypatch.delenv("LIFTWING_TOKEN", raising=False)
    monkeypatch.setattr(lwbatch.oauth, "WAITS", (0.01, 0.01))
    url = "http://127.0.0.1:9/oauth2/access_token"  # the discard port: nothing listens
    creds = Credentials(client_id="c0ffee", client_secret="s3cret-value", token_url=url)
    expected = (
        f"cannot get a token from {url}: ConnectError at each of 3 attempts; the token "
        "endpoint is down or unreachable: try again later"
    )
    with pytest.raises(AuthenticationError) as blocking:
        creds.fetch()
    with pytest.raises(AuthenticationError) as waiting:
        anyio.run(creds.fetch_async)
    assert str(blocking.value) == str(waiting.value) == expected
    path = credentials_file(tmp_path, "http://127.0.0.1:9")
    assert main(score(tmp_path, "http://127.0.0.1:9", "--credentials", str(path))) == 1
    assert capsys.readouterr().err == f"lwbatch: error: {expected}\n"


def test_a_token_endpoint_outage_mid_run_is_waited_out(
    tmp_path: Path,
    emulator: EmulatorFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lwbatch.oauth
    from lwbatch.cli import main

    monkeypatch.delenv("LIFTWING_TOKEN", raising=False)
    monkeypatch.setattr(lwbatch.oauth, "WAITS", (0.01,) * 4)
    # The first token comes at once; the refresh then meets three 503s.
    options = {"oauth_client": ("c0ffee", "s3cret-value"), "token_uses": 30}
    with emulator(**options, token_outage=(2, 4)) as (emu, base_url):
        path = credentials_file(tmp_path, base_url)
        code = main(score(tmp_path, base_url, "--credentials", str(path), rows=40))
        issued = emu.stats.tokens_issued
    assert code == 0, capsys.readouterr().err
    assert issued == 2
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 40


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('client_id = "a"\n', "need a client_id and a client_secret"),
        ('client_id = "a"\nsecret = "b"\n', "unknown key 'secret'"),
        ("client_id = \n", "not TOML"),
        ('client_id = "a"\nclient_secret = 5\n', "every value must be a string"),
        (
            'client_id = "a"\nclient_secret = "b"\ntoken_url = "http://oauth.invalid/token"\n',
            "`token_url` http://oauth.invalid/token: plain http would send the client "
            "secret in clear text; use https",
        ),
    ],
)
def test_bad_credentials_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        Credentials.from_file(path)
    assert message in str(info.value)


def test_credentials_never_show_their_secrets() -> None:
    creds = Credentials(client_id="c0ffee", client_secret="s3cret", refresh_token="r-9")
    assert "s3cret" not in repr(creds) and "r-9" not in repr(creds)


def test_tokens_expiring_under_many_requests_in_flight_are_each_replaced(
    tmp_path: Path,
    emulator: EmulatorFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lwbatch.cli import main

    monkeypatch.delenv("LIFTWING_TOKEN", raising=False)
    # 64 requests in flight when each token runs out: dozens of 401s at once, some for
    # requests already sent again with the token that replaced the last one.
    options = {"oauth_client": ("c0ffee", "s3cret-value"), "token_uses": 100}
    with emulator(**options) as (emu, base_url):
        path = credentials_file(tmp_path, base_url)
        args = score(tmp_path, base_url, "--credentials", str(path), rows=800)
        code = main([a for a in args if a not in ("--concurrency", "4")] + ["--concurrency", "64"])
        issued = emu.stats.tokens_issued
        ok = emu.stats.by_status["200"]
    assert code == 0, capsys.readouterr().err
    assert ok == 800
    assert issued >= 8  # 800 answers at 100 per token, and the 401s spend uses too
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 800


def test_half_given_credentials_name_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lwbatch.cli import main

    monkeypatch.delenv("LIFTWING_TOKEN", raising=False)
    monkeypatch.delenv("LIFTWING_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("LIFTWING_CLIENT_ID", "c0ffee")
    assert main(score(tmp_path, "http://127.0.0.1:9")) == 2
    assert capsys.readouterr().err == (
        "lwbatch: error: LIFTWING_CLIENT_ID is set but LIFTWING_CLIENT_SECRET is not: set "
        "both, or neither\n"
    )
    monkeypatch.delenv("LIFTWING_CLIENT_ID")
    path = tmp_path / "c.toml"
    path.write_text('client_id = "a"\n')
    assert main(score(tmp_path, "http://127.0.0.1:9", "--credentials", str(path))) == 2
    assert capsys.readouterr().err == (
        f"lwbatch: error: --credentials {path}: need a client_id and a client_secret\n"
    )


def test_the_emulator_command_serves_a_token_endpoint(tmp_path: Path) -> None:
    from lwbatch.testing.emulator import spawned

    with spawned("--oauth-client", "me:s3cret", "--token-uses", "2") as base_url:
        creds = Credentials(
            client_id="me", client_secret="s3cret", token_url=f"{base_url}/oauth2/access_token"
        )
        token = creds.fetch()
        import httpx

        url = f"{base_url}/v1/models/enwiki-damaging:predict"
        statuses = [
            httpx.post(
                url, json={"rev_id": 1}, headers={"Authorization": token.header()}
            ).status_code
            for _ in range(3)
        ]
    assert statuses == [200, 200, 401]
