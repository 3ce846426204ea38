"""The Lift Wing model catalogue: which model names exist and how each is called.

The catalogue is data (`configs/models.toml`); this module validates it and turns a
model name such as ``enwiki-damaging`` into a :class:`ModelSpec`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from lwbatch.errors import UnknownModelError, UsageError
from lwbatch.resources import catalogue_path

AnswerShape = Literal["revscoring", "revertrisk", "score"]
PredictionType = Literal["bool", "string", "list", "double"]
PayloadField = Literal["rev_id", "lang"]

_ANSWERS: frozenset[str] = frozenset({"revscoring", "revertrisk", "score"})
_PREDICTIONS: frozenset[str] = frozenset({"bool", "string", "list", "double"})
_FIELDS: frozenset[str] = frozenset({"rev_id", "lang"})


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

    def __post_init__(self) -> None:
        if self.answer not in _ANSWERS:
            raise ValueError(f"family {self.name}: answer must be one of {sorted(_ANSWERS)}")
        if self.prediction not in _PREDICTIONS:
            raise ValueError(
                f"family {self.name}: prediction must be one of {sorted(_PREDICTIONS)}"
            )
        if not self.payload or not set(self.payload) <= _FIELDS or "rev_id" not in self.payload:
            raise ValueError(f"family {self.name}: payload must list rev_id and optionally lang")
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
    wiki: str | None = None
    kind: str | None = None

    @property
    def needs_lang(self) -> bool:
        return "lang" in self.family.payload

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

    def resolve(self, name: str) -> ModelSpec:
        """The spec for one model name, or :class:`UnknownModelError`."""
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
        raise UnknownModelError(name, known=", ".join(f.name for f in self.families))

    def resolve_all(self, names: Iterable[str]) -> list[ModelSpec]:
        """Specs for a list of names, each at most once, in the order given."""
        specs: dict[str, ModelSpec] = {}
        for name in names:
            if name not in specs:
                specs[name] = self.resolve(name)
        if not specs:
            raise UsageError("no model given: name at least one with `models`")
        return list(specs.values())


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
        )
    except KeyError as exc:
        raise ValueError(f"catalogue family {entry.get('name', '?')}: missing key {exc}") from None


@cache
def default_catalog() -> Catalog:
    return Catalog.from_toml(catalogue_path())
