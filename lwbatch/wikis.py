"""Which wiki a revision belongs to, and the language value each model is sent for it.

Rows name their wiki by database name (``enwiki``, ``zh_yuewiki``, as in Wikimedia's
data lake) or, for Wikipedias, by language (``en``, ``yue``). The lang-taking model
servers take a language and rebuild ``wiki_db`` as ``lang + "wiki"``, so the two are
not interchangeable by string surgery: zh_yuewiki is ``yue`` to revertrisk and
reference-need (which check the canonical language codes and rewrite the host
themselves) but ``zh-yue`` to articlequality, readability and outlink-topic-model
(which put the value in front of ``.wikipedia.org``). Conversions go through
Wikimedia's canonical wiki list, shipped as ``lwbatch/data/wikis.tsv``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Literal

from lwbatch.errors import UsageError
from lwbatch.resources import wikis_path

LangForm = Literal["code", "host"]

# The code-taking servers (revertrisk, reference-need/-risk) fetch from
# `{code}.wikipedia.org` after rewriting these codes (their python/config.yaml,
# mw_host_replace); any other code whose host differs (vro, rup) fetches no wiki.
SERVER_HOST_REWRITE: dict[str, str] = {
    "be-x-old": "be-tarask",
    "yue": "zh-yue",
    "gsw": "als",
    "sgs": "bat-smg",
    "nan": "zh-min-nan",
    "lzh": "zh-classical",
}

# The families of wikis the gateway routes editquality models for, and the others
# whose database names a data-lake table may hold.
_DBNAME = re.compile(
    r"[a-z][a-z0-9_]*(?:wiki|wikibooks|wikiquote|wiktionary|wikinews|wikisource"
    r"|wikiversity|wikivoyage|wikimedia)"
)
_LOCALE = re.compile(r"([A-Za-z]{2,3})[-_][A-Za-z0-9]{2,8}")


@dataclass(frozen=True, slots=True)
class Wiki:
    """One wiki. `lang` and `domain` are empty for a database name lwbatch does not know."""

    dbname: str
    group: str = ""  # wikipedia, wiktionary, wikidata, commons, ...
    lang: str = ""  # the canonical language code: "yue" for zh_yuewiki
    domain: str = ""  # "zh-yue.wikipedia.org"
    open: bool = True

    @property
    def known(self) -> bool:
        return bool(self.group)

    @property
    def is_wikipedia(self) -> bool:
        return self.group == "wikipedia"

    def lang_for(self, form: LangForm) -> str:
        """The `lang` a model server takes for this Wikipedia: its code or its host."""
        if form == "host":
            return self.domain.split(".", 1)[0]
        return self.lang

    def fetched_host(self, form: LangForm) -> str:
        """The host a server sent :meth:`lang_for` fetches the revision from."""
        value = self.lang_for(form)
        return SERVER_HOST_REWRITE.get(value, value) if form == "code" else value


class WikiValueError(ValueError):
    """A value that names no wiki; the message says what it is and what to write."""


class WikiTable:
    """The canonical list, indexed by database name and by Wikipedia language."""

    def __init__(self, wikis: list[Wiki]) -> None:
        self.by_dbname = {w.dbname: w for w in wikis}
        # A Wikipedia is named by its language code or its host; no two collide.
        self.by_lang: dict[str, Wiki] = {}
        for wiki in wikis:
            if wiki.is_wikipedia:
                self.by_lang.setdefault(wiki.lang, wiki)
                self.by_lang.setdefault(wiki.lang_for("host"), wiki)
        for wiki in wikis:
            if wiki.is_wikipedia:
                # The retired code a database name still spells (be-x-old for be-tarask).
                self.by_lang.setdefault(wiki.dbname.removesuffix("wiki").replace("_", "-"), wiki)

    def __iter__(self) -> Iterator[Wiki]:
        return iter(self.by_dbname.values())

    def from_dbname(self, value: str) -> Wiki:
        """The wiki a database name names; unknown but well-formed names are kept."""
        text = value.strip()
        wiki = self.by_dbname.get(text)
        if wiki is not None:
            return wiki
        if not text:
            raise WikiValueError("is empty")
        if _DBNAME.fullmatch(text):
            return Wiki(text)
        lowered = text.lower()
        if lowered in self.by_dbname or _DBNAME.fullmatch(lowered):
            raise WikiValueError(f"{text!r} must be lower case: {lowered!r}")
        known = (
            self.by_lang.get(text)
            or self._by_domain(lowered)
            or self.by_dbname.get(lowered.replace("-", "_"))
            or self.by_dbname.get(lowered.replace("-", "_") + "wiki")
        )
        if known is not None:
            raise WikiValueError(
                f"{text!r} is not a database name; this wiki's is {known.dbname!r}"
            )
        raise WikiValueError(f"{text[:40]!r} is not a wiki database name such as 'enwiki'")

    def from_lang(self, value: str) -> Wiki:
        """The Wikipedia a language value names (``en``, ``yue`` or ``zh-yue``).

        A Wikipedia's database name (``enwiki``) is read as that Wikipedia.
        """
        text = value.strip()
        wiki = self.by_lang.get(text)
        if wiki is not None:
            return wiki
        named = self.by_dbname.get(text)
        if named is not None and named.is_wikipedia:
            return named
        if not text:
            raise WikiValueError("is empty")
        if named is not None:
            raise WikiValueError(
                f"{text!r} is the database name of a wiki that is not a Wikipedia; "
                "name a column of database names with `wiki_column`"
            )
        lowered = text.lower()
        wiki = self.by_lang.get(lowered) or self.by_dbname.get(lowered)
        if wiki is not None and wiki.is_wikipedia:
            raise WikiValueError(f"{text!r} must be lower case: {wiki.lang!r}")
        near = self.by_lang.get(lowered.replace("_", "-"))
        if near is not None:
            raise WikiValueError(f"{text!r} is not a language code; write {near.lang!r}")
        locale = _LOCALE.fullmatch(text)
        if locale is not None and (base := self.by_lang.get(locale.group(1).lower())):
            raise WikiValueError(
                f"{text!r} is a locale; Wikipedias go by language code: {base.lang!r}"
            )
        raise WikiValueError(f"{text[:40]!r} is not the language code of a Wikipedia")

    def from_key(self, value: str) -> Wiki:
        """The wiki of a row key's wiki value (a database name or a Wikipedia's code),
        as a source wrote it; a name lwbatch does not know stays an unknown wiki."""
        found = self.by_dbname.get(value) or self.by_lang.get(value)
        return found if found is not None else Wiki(value)

    def _by_domain(self, text: str) -> Wiki | None:
        host = text.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
        for wiki in self:
            if wiki.domain == host:
                return wiki
        return None


def _load() -> list[Wiki]:
    with wikis_path().open(encoding="utf-8", newline="") as fh:
        lines = (line for line in fh if not line.startswith("#"))
        return [
            Wiki(
                dbname=row["dbname"],
                group=row["group"],
                lang=row["lang"],
                domain=row["domain"],
                open=row["status"] == "open",
            )
            for row in csv.DictReader(lines, delimiter="\t")
        ]


@cache
def wikis() -> WikiTable:
    """The shipped canonical wiki list."""
    return WikiTable(_load())


def wikipedia(lang: str) -> Wiki:
    """The Wikipedia `lang` names: the wiki of the rows an input does not give one for."""
    try:
        return wikis().from_lang(lang)
    except WikiValueError as exc:
        raise UsageError(f"`lang` {exc}") from None


__all__ = [
    "SERVER_HOST_REWRITE",
    "LangForm",
    "Wiki",
    "WikiTable",
    "WikiValueError",
    "wikipedia",
    "wikis",
]
