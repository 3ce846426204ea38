"""Regenerate the server data lwbatch ships, from the files Wikimedia publishes.

Two kinds of file live in ``lwbatch/data/``:

- ``wikis.tsv``, the canonical wiki list: database name, project, canonical language
  code, domain, status. Made from Wikimedia's canonical-data wikis list (the same
  columns as the Lift Wing servers' ``revert_risk_model/data/wikis.tsv``), because only
  it has the canonical codes the servers check (zh_yuewiki is ``yue``, alswiki ``gsw``,
  zh_min_nanwiki ``nan``); the site matrix has hosts. Wikipedias newer than the
  canonical file may be added from a site-matrix list (``dbname<TAB>subdomain``, as
  outlink-topic-model's ``wikis.tsv``), their code taken to be their subdomain.
- ``coverage/NAME.tsv``, the wikis one model server can score, with the repository,
  path and commit it was read from: articlequality's feature table
  (``data/feature_values.tsv``, column ``wiki_db``) or revertrisk's canonical list (its
  open, public Wikipedias).

Usage (no network: give the files, downloaded by hand):

    python -m lwbatch.cli.refresh wikis CANONICAL.tsv [--sitematrix SITES.tsv] \\
        --source 'REPO PATH at COMMIT (DATE)' -o lwbatch/data/wikis.tsv
    python -m lwbatch.cli.refresh coverage articlequality feature_values.tsv \\
        --kind feature-table --repo REPO --path PATH --commit SHA --date DATE \\
        -o lwbatch/data/coverage/articlequality.tsv
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

WIKI_COLUMNS = ("dbname", "group", "lang", "domain", "status")
_CANONICAL = ("database_code", "domain_name", "database_group", "language_code", "status")


class RefreshError(Exception):
    """A source file that is not what it should be; the message names it."""


@dataclass(frozen=True, slots=True)
class WikiRow:
    dbname: str
    group: str
    lang: str
    domain: str
    status: str


def _read_tsv(path: Path, needed: Sequence[str]) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            lines = [line for line in fh if not line.startswith("#")]
    except OSError as exc:
        raise RefreshError(f"{path}: cannot read it ({exc.strerror})") from None
    reader = csv.DictReader(lines, delimiter="\t")
    missing = [c for c in needed if c not in (reader.fieldnames or ())]
    if missing:
        raise RefreshError(f"{path}: no column {', '.join(missing)} (is it the right file?)")
    return list(reader)


def canonical_wikis(path: Path) -> list[WikiRow]:
    """The public wikis of a canonical-data wikis list (private ones are left out: no
    revision of theirs is public)."""
    rows = _read_tsv(path, (*_CANONICAL, "visibility"))
    return [
        WikiRow(
            dbname=row["database_code"],
            group=row["database_group"],
            lang=row["language_code"],
            domain=row["domain_name"],
            status=row["status"],
        )
        for row in rows
        if row["visibility"] == "public"
    ]


def sitematrix_wikipedias(path: Path) -> list[WikiRow]:
    """Open Wikipedias of a ``dbname<TAB>subdomain`` list, the code taken as the host."""
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RefreshError(f"{path}: cannot read it ({exc.strerror})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].endswith("wiki"):
            raise RefreshError(f"{path}, line {number}: expected DBNAME<TAB>SUBDOMAIN")
        dbname, host = parts
        out.append(WikiRow(dbname, "wikipedia", host, f"{host}.wikipedia.org", "open"))
    return out


def merge(canonical: Iterable[WikiRow], added: Iterable[WikiRow]) -> list[WikiRow]:
    """The canonical rows, and the added ones it lacks, sorted by database name."""
    rows = {row.dbname: row for row in canonical}
    for row in added:
        rows.setdefault(row.dbname, row)
    return sorted(rows.values(), key=lambda row: row.dbname)


def wikis_tsv(rows: Iterable[WikiRow], source: str) -> str:
    said = textwrap.wrap(
        "Wikimedia's public wikis: database name, project group, canonical language code, "
        "domain, status. Made by `python -m lwbatch.cli.refresh wikis` (lwbatch/cli/refresh.py) "
        f"from {source}. lwbatch/wikis.py reads it.",
        width=86,
    )
    lines = [*(f"# {line}" for line in said), "\t".join(WIKI_COLUMNS)]
    lines += ["\t".join((r.dbname, r.group, r.lang, r.domain, r.status)) for r in rows]
    return "\n".join(lines) + "\n"


def feature_table_wikis(path: Path) -> list[str]:
    """articlequality's feature table: a row per wiki it can score (column wiki_db)."""
    return sorted({row["wiki_db"] for row in _read_tsv(path, ("wiki_db",))})


def canonical_open_wikipedias(path: Path) -> list[str]:
    """What revertrisk accepts (base_model.py, load_canonical_wikis): the Wikipedias that
    are open, public and publicly editable."""
    rows = _read_tsv(path, (*_CANONICAL, "visibility", "editability"))
    return sorted(
        row["database_code"]
        for row in rows
        if row["database_group"] == "wikipedia"
        and row["status"] == "open"
        and row["visibility"] == "public"
        and row["editability"] == "public"
    )


def coverage_tsv(
    name: str, wikis: Iterable[str], *, what: str, repo: str, path: str, commit: str, date: str
) -> str:
    lines = [
        f"# {name}: {what}",
        f"# repo: {repo}",
        f"# path: {path}",
        f"# commit: {commit}",
        f"# date: {date}",
        "# Made by `python -m lwbatch.cli.refresh coverage` (lwbatch/cli/refresh.py).",
        *wikis,
    ]
    return "\n".join(lines) + "\n"


_KINDS = {
    "feature-table": (
        feature_table_wikis,
        "the wikis of its feature table; another wiki answers 500 KeyError",
    ),
    "canonical": (
        canonical_open_wikipedias,
        "the open Wikipedias of its canonical list; another answers 400",
    ),
}


def _write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lwbatch.cli.refresh", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    wikis = commands.add_parser("wikis", help="regenerate wikis.tsv")
    wikis.add_argument("canonical", type=Path)
    wikis.add_argument("--sitematrix", type=Path, help="DBNAME<TAB>SUBDOMAIN list to add from")
    wikis.add_argument("--source", required=True, help="where the files came from (header)")
    wikis.add_argument("-o", "--output", type=Path, required=True)
    coverage = commands.add_parser("coverage", help="regenerate one model's coverage list")
    coverage.add_argument("name")
    coverage.add_argument("source", type=Path)
    coverage.add_argument("--kind", choices=sorted(_KINDS), required=True)
    for option in ("--repo", "--path", "--commit", "--date"):
        coverage.add_argument(option, required=True)
    coverage.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "wikis":
            added = sitematrix_wikipedias(args.sitematrix) if args.sitematrix else []
            rows = merge(canonical_wikis(args.canonical), added)
            _write(args.output, wikis_tsv(rows, args.source))
        else:
            read, what = _KINDS[args.kind]
            text = coverage_tsv(
                args.name,
                read(args.source),
                what=what,
                repo=args.repo,
                path=args.path,
                commit=args.commit,
                date=args.date,
            )
            _write(args.output, text)
    except RefreshError as exc:
        print(f"lwbatch.cli.refresh: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
