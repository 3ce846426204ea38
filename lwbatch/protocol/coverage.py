"""Which wikis a model server can score, as its own data says.

Some servers carry their coverage as a file: articlequality's feature table (a wiki
missing there answers 500 ``KeyError`` for every revision) and revertrisk's canonical
list (another wiki answers 400). lwbatch ships a copy of each (``lwbatch/data/coverage/``,
made by ``python -m lwbatch.cli.refresh coverage``) with the commit it was read at, and
refuses the other wikis up front. Deployments change: a catalogue without coverage
(:meth:`Catalog.without_coverage <lwbatch.protocol.catalog.Catalog.without_coverage>`)
sends them anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from lwbatch.resources import coverage_path


@dataclass(frozen=True, slots=True)
class Coverage:
    """The wikis (database names) one model server scores, and where the list is from."""

    name: str
    wikis: frozenset[str]
    what: str  # what the list is, as its file says
    repo: str
    path: str
    commit: str
    date: str

    def serves(self, dbname: str) -> bool:
        return dbname in self.wikis

    def describe(self) -> str:
        """`333 wikis (src/models/.../feature_values.tsv at 67a4ca9725, 2024-08-01)`."""
        return f"{len(self.wikis)} wikis ({self.path} at {self.commit[:10]}, {self.date})"


@cache
def load_coverage(name: str) -> Coverage:
    """The shipped list `name` (``lwbatch/data/coverage/NAME.tsv``)."""
    path = coverage_path(name)
    header: dict[str, str] = {}
    wikis: set[str] = set()
    what = ""
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh):
            text = line.strip()
            if not text.startswith("#"):
                if text:
                    wikis.add(text)
                continue
            body = text.lstrip("# ")
            if number == 0:
                what = body.partition(": ")[2]
            key, sep, value = body.partition(": ")
            if sep and key in ("repo", "path", "commit", "date"):
                header[key] = value
    missing = {"repo", "path", "commit", "date"} - set(header)
    if missing or not wikis:
        raise ValueError(f"{path}: not a coverage list (missing {', '.join(sorted(missing))})")
    return Coverage(name=name, wikis=frozenset(wikis), what=what, **header)


__all__ = ["Coverage", "load_coverage"]
