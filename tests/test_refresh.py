"""Regenerating the shipped server data (lwbatch/cli/refresh.py) from files given by
hand: no network. The input rows are written here in the canonical-data format."""

from __future__ import annotations

from pathlib import Path

import pytest

from lwbatch.cli.refresh import main

HEADER = (
    "database_code\tdomain_name\tdatabase_group\tlanguage_code\tmobile_domain_name\t"
    "language_name\tstatus\tvisibility\teditability\tenglish_name"
)


def canon(dbname: str, host: str, group: str, code: str, *status: str) -> str:
    """A canonical-data row; `status` is (status, visibility, editability)."""
    domain = f"{host}.{group}.org"
    mobile = f"{host}.m.{group}.org"
    return "\t".join((dbname, domain, group, code, mobile, "L", *status, "E"))


OPEN = ("open", "public", "public")
CANONICAL = [
    canon("alswiki", "als", "wikipedia", "gsw", *OPEN),
    canon("zh_yuewiki", "zh-yue", "wikipedia", "yue", *OPEN),
    canon("zh_min_nanwiki", "zh-min-nan", "wikipedia", "nan", *OPEN),
    canon("aawiki", "aa", "wikipedia", "aa", "closed", "public", "public"),
    canon("enwikibooks", "en", "wikibooks", "en", *OPEN),
    canon("arbcom_enwiki", "arbcom-en", "wikipedia", "en", "open", "private", "private"),
    canon("fishbowlwiki", "fishbowl", "wikipedia", "fb", "open", "public", "private"),
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rows(path: Path) -> list[list[str]]:
    return [
        line.split("\t")
        for line in path.read_text(encoding="utf-8").splitlines()
        if not line.startswith("#")
    ]


def test_wikis_keep_the_canonical_codes_and_add_newer_wikipedias(tmp_path: Path) -> None:
    canonical = write(tmp_path / "canonical.tsv", [HEADER, *CANONICAL])
    # A site-matrix list names hosts: als for alswiki, which must not replace gsw.
    sites = write(tmp_path / "sites.tsv", ["alswiki\tals", "bolwiki\tbol", "zh_yuewiki\tzh-yue"])
    out = tmp_path / "wikis.tsv"
    assert (
        main(["wikis", str(canonical), "--sitematrix", str(sites), "--source", "S", "-o", str(out)])
        == 0
    )
    assert rows(out) == [
        ["dbname", "group", "lang", "domain", "status"],
        ["aawiki", "wikipedia", "aa", "aa.wikipedia.org", "closed"],
        ["alswiki", "wikipedia", "gsw", "als.wikipedia.org", "open"],
        ["bolwiki", "wikipedia", "bol", "bol.wikipedia.org", "open"],
        ["enwikibooks", "wikibooks", "en", "en.wikibooks.org", "open"],
        ["fishbowlwiki", "wikipedia", "fb", "fishbowl.wikipedia.org", "open"],
        ["zh_min_nanwiki", "wikipedia", "nan", "zh-min-nan.wikipedia.org", "open"],
        ["zh_yuewiki", "wikipedia", "yue", "zh-yue.wikipedia.org", "open"],
    ]
    assert "from S." in out.read_text(encoding="utf-8")


def test_coverage_lists_name_their_source(tmp_path: Path) -> None:
    canonical = write(tmp_path / "canonical.tsv", [HEADER, *CANONICAL])
    out = tmp_path / "rr.tsv"
    args = ["--repo", "R", "--path", "P", "--commit", "C" * 40, "--date", "2025-07-23"]
    assert (
        main(
            ["coverage", "revertrisk", str(canonical), "--kind", "canonical", *args, "-o", str(out)]
        )
        == 0
    )
    # Open, public, publicly editable Wikipedias only: not aawiki (closed), not the
    # private or fishbowl ones, not Wikibooks.
    assert out.read_text(encoding="utf-8").splitlines() == [
        "# revertrisk: the open Wikipedias of its canonical list; another answers 400",
        "# repo: R",
        "# path: P",
        f"# commit: {'C' * 40}",
        "# date: 2025-07-23",
        "# Made by `python -m lwbatch.cli.refresh coverage` (lwbatch/cli/refresh.py).",
        "alswiki",
        "zh_min_nanwiki",
        "zh_yuewiki",
    ]
    table = write(
        tmp_path / "feature_values.tsv",
        ["wiki_db\tnum_pages\tmax_length", "enwiki\t1\t2.0", "abwiki\t3\t4.0"],
    )
    out = tmp_path / "aq.tsv"
    assert (
        main(["coverage", "aq", str(table), "--kind", "feature-table", *args, "-o", str(out)]) == 0
    )
    assert out.read_text(encoding="utf-8").splitlines()[6:] == ["abwiki", "enwiki"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["wiki\tlang", "enwiki\ten"], "no column database_code, domain_name"),
        ([], "no column database_code"),
    ],
)
def test_a_wrong_file_is_named_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    wrong = write(tmp_path / "wrong.tsv", lines)
    out = tmp_path / "wikis.tsv"
    assert main(["wikis", str(wrong), "--source", "S", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lwbatch.cli.refresh: {wrong}: {message}")
    assert not out.exists()
    sites = write(tmp_path / "sites.tsv", ["bolwiki bol"])
    canonical = write(tmp_path / "canonical.tsv", [HEADER, *CANONICAL])
    assert (
        main(["wikis", str(canonical), "--sitematrix", str(sites), "--source", "S", "-o", str(out)])
        == 2
    )
    assert f"{sites}, line 1: expected DBNAME<TAB>SUBDOMAIN" in capsys.readouterr().err
    assert not out.exists()
