"""The Lift Wing model catalogue: which model names exist and how each is called.

The catalogue is data (`configs/models.toml`); this module validates it and turns a
model name such as ``enwiki-damaging`` into a :class:`ModelSpec`. ``{wiki}-damaging``
is a template: one output column, each row scored by the model of its own wiki.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from lwbatch.errors import UnknownModelError, UsageError
from lwbatch.protocol.coverage import Coverage, load_coverage
from lwbatch.resources import catalogue_path
from lwbatch.wikis import LangForm, Wiki

AnswerShape = Literal["revscoring", "revertrisk", "score", "outlink"]
PredictionType = Literal["bool", "string", "list", "double"]
PayloadField = Literal["rev_id", "revision_id", "lang", "page_id"]
WikiScope = Literal["named", "wikipedia", "wikidata"]

TEMPLATE = "{wiki}"
_WIKI_LIKE = re.compile(r"[a-z][a-z0-9_]*(?:wiki|wikibooks|wikiquote|wiktionary)")
_ANSWERS: frozenset[str] = frozenset({"revscoring", "revertrisk", "score", "outlink"})
_PREDICTIONS: frozenset[str] = frozenset({"bool", "string", "list", "double"})
_FIELDS: frozenset[str] = frozenset({"rev_id", "revision_id", "lang", "page_id"})
_LANG_FORMS: frozenset[str] = frozenset({"code", "host"})
_SCOPES: frozenset[str] = frozenset({"named", "wikipedia", "wikidata"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Family:
    """One family of Lift Wing models that share a payload and an answer shape."""

    name: str
    pattern: re.Pattern[str]
    namespace: str
    payload: tuple[PayloadField, ...]
    answer: AnswerShape
    prediction: PredictionType
    score_field: tuple[str, ...] = ()
    max_batch: int = 1
    labels: tuple[str, ...] = ()
    lang_form: LangForm = "code"
    wikis: WikiScope = "wikipedia"
    # The server also looks the wiki up as its database name less "wiki" (articlequality's
    # feature table), so it scores only wikis whose host is that.
    host_is_dbname: bool = False
    # Served only in Lift Wing's experimental namespace, which the API gateway does not
    # route: reachable on the internal endpoints (or a proxy), not the public one.
    experimental: bool = False
    # The wikis its server scores, from the server's own data; None: not known here.
    coverage: Coverage | None = None

    def __post_init__(self) -> None:
        if self.answer not in _ANSWERS:
            raise ValueError(f"family {self.name}: answer must be one of {sorted(_ANSWERS)}")
        if self.prediction not in _PREDICTIONS:
            raise ValueError(
                f"family {self.name}: prediction must be one of {sorted(_PREDICTIONS)}"
            )
        ids = {"rev_id", "revision_id"} & set(self.payload)
        if not set(self.payload) <= _FIELDS or len(ids) != 1:
            raise ValueError(
                f"family {self.name}: payload must list one of rev_id, revision_id and "
                "optionally lang, page_id"
            )
        if self.lang_form not in _LANG_FORMS:
            raise ValueError(f"family {self.name}: lang_form must be one of {sorted(_LANG_FORMS)}")
        if self.wikis not in _SCOPES:
            raise ValueError(f"family {self.name}: wikis must be one of {sorted(_SCOPES)}")
        if (self.wikis == "named") != (self.answer == "revscoring"):
            raise ValueError(f"family {self.name}: wikis = 'named' is for revscoring models")
        if self.answer == "score" and not self.score_field:
            raise ValueError(f"family {self.name}: answer 'score' needs score_field")
        if self.answer == "revscoring" and "kind" not in self.pattern.groupindex:
            raise ValueError(f"family {self.name}: a revscoring pattern needs groups wiki, kind")
        if not 1 <= self.max_batch <= 1000:
            raise ValueError(f"family {self.name}: max_batch must be in 1..1000")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """One concrete model, e.g. ``enwiki-damaging``, and how to call it."""

    name: str
    family: Family
    namespace: str
    wiki: str | None = None  # None for a template, and for models that name no wiki
    kind: str | None = None
    template: str | None = None  # the template this wiki's model was made from

    @property
    def column(self) -> str:
        """The output column this model's answers go to: its template's, if any."""
        return self.template or self.name

    @property
    def needs_lang(self) -> bool:
        return "lang" in self.family.payload

    @property
    def needs_page(self) -> bool:
        """Whether the server needs the revision's page too (its page_id or title)."""
        return "page_id" in self.family.payload

    @property
    def is_template(self) -> bool:
        return self.name.startswith(TEMPLATE)

    def for_wiki(self, wiki: str) -> ModelSpec | None:
        """The concrete model of a template for one wiki, or None if none can exist."""
        name = self.name.replace(TEMPLATE, wiki, 1)
        match = self.family.pattern.fullmatch(name)
        if match is None:
            return None
        return ModelSpec(
            name=name,
            family=self.family,
            namespace=self.namespace,
            wiki=wiki,
            kind=self.kind,
            template=self.name,
        )

    def refuses(self, wiki: Wiki) -> str | None:
        """Why this model cannot score a revision of `wiki`, or None if it can.

        Only asked when rows name their wiki; a template is resolved before it is asked.
        """
        scope = self.family.wikis
        if scope == "named":
            if self.wiki != wiki.dbname:
                return f"{self.name} scores {self.wiki} revisions, not {wiki.dbname} ones"
            return None
        if scope == "wikidata":
            if wiki.dbname != "wikidatawiki":
                return f"{self.name} scores Wikidata revisions, not {wiki.dbname} ones"
            return None
        if not wiki.is_wikipedia:
            what = "not a Wikipedia" if wiki.known else "not a Wikipedia lwbatch knows"
            return f"{self.name} scores Wikipedia revisions; {wiki.dbname} is {what}"
        form = self.family.lang_form
        host = wiki.lang_for("host")
        if wiki.fetched_host(form) != host:
            return (
                f"{self.name} cannot fetch {wiki.dbname} revisions: it takes the code "
                f"{wiki.lang_for(form)!r} and fetches {wiki.fetched_host(form)}.wikipedia.org, "
                f"not {host}.wikipedia.org"
            )
        if self.family.host_is_dbname and wiki.dbname.replace("wiki", "") != host:
            return (
                f"{self.name} cannot score {wiki.dbname}: its server looks the wiki up as "
                f"{wiki.dbname.replace('wiki', '')!r} but fetches {host}.wikipedia.org"
            )
        return self.uncovered(wiki)

    def uncovered(self, wiki: Wiki) -> str | None:
        """Why `wiki` is outside the wikis this model's server lists, or None."""
        coverage = self.family.coverage
        if coverage is None or coverage.serves(wiki.dbname):
            return None
        if wiki.known and not wiki.open:
            return (
                f"{self.name} does not score {wiki.dbname}: it is closed, and not in the "
                f"server's list ({coverage.describe()})"
            )
        return (
            f"{self.name} does not score {wiki.dbname}: it is not in the server's list "
            f"({coverage.describe()})"
        )

    @property
    def max_batch(self) -> int:
        return self.family.max_batch

    @property
    def host(self) -> str:
        """Host header for the internal endpoint."""
        return f"{self.name}.{self.namespace}.wikimedia.org"


class Catalog:
    """The model families, in the order they are tried."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.families = tuple(families)

    @classmethod
    def from_toml(cls, path: Path) -> Catalog:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        return cls([_family(entry) for entry in data.get("family", [])])

    def without_coverage(self) -> Catalog:
        """This catalogue with no coverage lists: every wiki is sent, as before a list
        was known (deployments change faster than lwbatch's copy)."""
        return Catalog([replace(family, coverage=None) for family in self.families])

    def resolve(self, name: str) -> ModelSpec:
        """The spec for one model name, or :class:`UnknownModelError`. Lift Wing's names
        are lowercase: ``EnWiki-Damaging`` is ``enwiki-damaging``."""
        if name != name.lower() and self._fits_any(name.lower()):
            name = name.lower()
        if name.startswith(TEMPLATE):
            return self._template(name)
        for family in self.families:
            match = family.pattern.fullmatch(name)
            if match is None:
                continue
            groups = match.groupdict()
            kind = groups.get("kind")
            return ModelSpec(
                name=name,
                family=family,
                namespace=family.namespace.format(kind=kind or ""),
                wiki=groups.get("wiki"),
                kind=kind,
            )
        raise UnknownModelError(name, known=self.describe(), close=self.closest(name))

    def _fits_any(self, name: str) -> bool:
        return name.startswith(TEMPLATE) or self._fits(name)

    def closest(self, name: str) -> str | None:
        """The accepted name most like `name` (a misspelt kind or model), if any is."""
        lowered = name.lower()
        wiki, _, rest = lowered.partition("-")
        if not _WIKI_LIKE.fullmatch(wiki):
            wiki = TEMPLATE
        candidates: list[str] = []
        for family in self.families:
            source = family.pattern.pattern
            kinds = re.search(r"\(\?P<kind>([^)]*)\)", source)
            fixed = re.search(r"\(\?P<wiki>([a-z]+)\)", source)
            if kinds is None:
                candidates.append(source)
                continue
            for kind in kinds.group(1).split("|"):
                candidates.append(f"{fixed.group(1) if fixed else wiki}-{kind}")
        found = difflib.get_close_matches(lowered, candidates, n=1, cutoff=0.75)
        if found and found[0] != lowered:
            return found[0]
        # The start of a name ("revertrisk"): its first family, as the catalogue orders them.
        started = [c for c in candidates if c.startswith(f"{lowered}-")]
        if started:
            return started[0]
        # A kind alone, as ORES named models inside a wiki ("damaging").
        kinds_only = difflib.get_close_matches(
            lowered, [c.partition("-")[2] for c in candidates if "-" in c], n=1, cutoff=0.9
        )
        if kinds_only and rest == "":
            return f"{TEMPLATE}-{kinds_only[0]}"
        return None

    def _fits(self, name: str) -> bool:
        return any(family.pattern.fullmatch(name) for family in self.families)

    def describe(self) -> str:
        """The model names the catalogue accepts, as a reader would write them."""
        return ", ".join(names_of(family) for family in self.families)

    def _template(self, name: str) -> ModelSpec:
        # A wiki every generic revscoring pattern accepts stands in to find the family.
        try:
            spec = self.resolve(name.replace(TEMPLATE, "enwiki", 1))
        except UnknownModelError:
            spec = None
        if spec is None or spec.family.answer != "revscoring" or TEMPLATE in name[1:]:
            wikidata = name.replace(TEMPLATE, "wikidatawiki", 1)
            if TEMPLATE not in name[1:] and self._fits(wikidata):
                raise UsageError(
                    f"model {name!r}: this kind exists for Wikidata only; name it {wikidata!r}"
                )
            raise UnknownModelError(name, known=self.describe())
        return ModelSpec(
            name=name, family=spec.family, namespace=spec.namespace, wiki=None, kind=spec.kind
        )

    def resolve_all(self, names: Iterable[str]) -> list[ModelSpec]:
        """Specs for a list of names, each at most once, in the order given."""
        specs: dict[str, ModelSpec] = {}
        for name in names:
            if name not in specs:
                specs[name] = self.resolve(name)
        if not specs:
            raise UsageError("no model given: name at least one with `models`")
        return list(specs.values())


def names_of(family: Family) -> str:
    """The names a family accepts, as a reader would write them (WIKI-damaging|...)."""
    source = family.pattern.pattern
    kinds = re.search(r"\(\?P<kind>([^)]*)\)", source)
    wiki = re.search(r"\(\?P<wiki>([a-z]+)\)", source)
    if kinds is None:
        return source
    if wiki is not None:
        return f"{wiki.group(1)}-{kinds.group(1)}"
    return f"WIKI-{kinds.group(1)}"


def split_model_names(values: Iterable[str]) -> list[str]:
    """`-m a -m b,c` -> ["a", "b", "c"]."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _family(entry: Mapping[str, Any]) -> Family:
    try:
        return Family(
            name=str(entry["name"]),
            pattern=re.compile(str(entry["pattern"])),
            namespace=str(entry["namespace"]),
            payload=tuple(entry["payload"]),
            answer=entry["answer"],
            prediction=entry["prediction"],
            score_field=tuple(str(entry.get("score_field", "")).split("."))
            if "score_field" in entry
            else (),
            max_batch=int(entry.get("max_batch", 1)),
            labels=tuple(str(label) for label in entry.get("labels", ())),
            lang_form=entry.get("lang_form", "code"),
            host_is_dbname=bool(entry.get("host_is_dbname", False)),
            experimental=bool(entry.get("experimental", False)),
            coverage=load_coverage(str(entry["coverage"])) if "coverage" in entry else None,
            wikis=entry.get(
                "wikis", "named" if entry.get("answer") == "revscoring" else "wikipedia"
            ),
        )
    except KeyError as exc:
        raise ValueError(f"catalogue family {entry.get('name', '?')}: missing key {exc}") from None


@cache
def default_catalog() -> Catalog:
    return Catalog.from_toml(catalogue_path())
