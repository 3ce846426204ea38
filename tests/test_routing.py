"""Routing by the Host header, as Lift Wing's internal endpoints (production and staging)
route: checked by the emulator, which can require it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lwbatch import Budget, Endpoint, score_file
from lwbatch.config import INTERNAL_BASE_URL, STAGING_BASE_URL
from lwbatch.settings import Connection
from tests.conftest import EmulatorFactory, write_parquet


def test_the_internal_endpoints_route_by_host() -> None:
    assert Endpoint.internal() == Endpoint(base_url=INTERNAL_BASE_URL, host_header=True)
    staging = Endpoint.internal(staging=True)
    assert (staging.base_url, staging.host_header) == (
        "https://inference-staging.svc.codfw.wmnet:30443",
        True,
    )
    assert STAGING_BASE_URL == staging.base_url


def test_host_routing_against_an_emulator_that_requires_it(
    tmp_path: Path, emulator: EmulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    inp = write_parquet(tmp_path / "in.parquet", {"rev_id": pa.array([1, 2], pa.int64())})
    models = ["enwiki-damaging", "revertrisk-language-agnostic"]
    with emulator(require_host=True) as (emu, base_url):
        score_file(
            inp,
            tmp_path / "routed.parquet",
            models=models,
            rate=Budget.unlimited(),
            connection=Connection(endpoint=Endpoint(base_url=base_url, host_header=True)),
        )
        assert (emu.stats.misrouted, emu.stats.by_status["200"]) == (0, 3)
        # Without the Host header the emulator finds no server: every model is a 404.
        args = ["score", str(inp), "-o", str(tmp_path / "plain.parquet"), "-q"]
        args += ["-m", ",".join(models), "--base-url", base_url]
        assert main(args) == 1
        assert emu.stats.misrouted == 2
        assert main([*args, "--host-routing"]) == 0
    capsys.readouterr()
    table = pq.read_table(tmp_path / "routed.parquet")
    assert table.column("enwiki-damaging").combine_chunks().field("error").to_pylist() == [None] * 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--internal", "--internal-staging"], "give the endpoint once: --endpoint"),
        (["--internal-staging", "--base-url", "http://127.0.0.1:9"], "give the endpoint once"),
        (["--endpoint", "internal", "--base-url", "http://127.0.0.1:9"], "give the endpoint once"),
        (["--host-routing"], "--host-routing is for --endpoint URL"),
        (["--endpoint", "internal", "--host-routing"], "--host-routing is for --endpoint URL"),
        (["--endpoint", "interal"], "--endpoint interal: give public, internal,"),
    ],
)
def test_endpoint_flags_that_do_not_go_together(
    tmp_path: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from lwbatch.cli import main

    code = main(
        ["score", "x.parquet", "-o", str(tmp_path / "o.parquet"), "-m", "enwiki-damaging", *flags]
    )
    assert code == 2
    assert message in capsys.readouterr().err
