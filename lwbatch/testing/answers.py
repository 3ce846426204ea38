"""What each Lift Wing model server answers: payload and language checks, scores, errors.

The emulator's HTTP side (lwbatch/testing/emulator.py) hands a decoded request body
here and gets back a :class:`Reply`. The bodies and statuses are those of the real
servers (read from Wikimedia's inference-services repository, 2026): kserve turns an
`InvalidInput` into 400 ``{"error": ...}`` and an `InferenceError` into 500
``{"error": ...}``; a FastAPI `HTTPException` gives ``{"detail": ...}``. The scoring
rule is stated in the emulator's module docstring.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, TypeGuard

from lwbatch.protocol.catalog import ModelSpec
from lwbatch.wikis import SERVER_HOST_REWRITE, wikis

Problem = Literal["missing", "deleted"]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
# The revertrisk servers let "test" through their canonical-language check as "en"; the
# revision then comes from test.wikipedia.org, so it is a testwiki revision.
_TEST = "test"


def unit(key: str, rev_id: int, salt: int = 0) -> float:
    """A deterministic number in [0, 1) for (key, rev_id) (splitmix64)."""
    x = ((zlib.crc32(key.encode()) << 32) ^ rev_id ^ (salt * _GOLDEN)) & _MASK64
    x = (x + _GOLDEN) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((x ^ (x >> 31)) >> 11) / float(1 << 53)


def score_key(spec: ModelSpec, wiki: str) -> str:
    """What scores hash besides the rev_id: the model name, and the wiki for lang models."""
    return f"{spec.name}@{wiki}" if spec.needs_lang else spec.name


@dataclass(frozen=True, slots=True)
class Reply:
    """A model server's answer: status and JSON body."""

    status: int
    body: Any


@dataclass(frozen=True, slots=True)
class Instance:
    """One revision a request asks about, as the server reads the request."""

    rev_id: int
    wiki: str  # the database name the revision belongs to
    lang: str = ""  # as sent; the answers echo it
    article: str = ""  # outlink-topic-model: the article URL it answers with
    threshold: float = 0.5  # outlink-topic-model


@cache
def _hosts() -> dict[str, str]:
    """Wikipedia host label (``zh-yue``) -> database name; closed wikis still serve."""
    return {w.lang_for("host"): w.dbname for w in wikis() if w.is_wikipedia}


@cache
def _canonical_codes() -> frozenset[str]:
    """The codes the revertrisk servers accept: open Wikipedias in the canonical list."""
    return frozenset(w.lang for w in wikis() if w.is_wikipedia and w.open)


def wiki_for(spec: ModelSpec, lang: str) -> str | None:
    """The database name of the wiki whose revision `lang` reaches on spec's server, or
    None if it reaches none. Models without lang answer for their own wiki."""
    if not spec.needs_lang:
        if spec.family.wikis == "wikidata":
            return "wikidatawiki"
        return spec.wiki or ""
    if lang == _TEST:
        return "testwiki"
    if spec.family.lang_form == "host":
        # The value goes before ".wikipedia.org" as it is: only a host reaches a wiki.
        return _hosts().get(lang)
    # Code-form servers rewrite six codes whose host differs (yue -> zh-yue); the others
    # (vro, rup) are fetched from a host that is no wiki's.
    return _hosts().get(SERVER_HOST_REWRITE.get(lang, lang))


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _error(status: int, key: str, message: str) -> Reply:
    return Reply(status, {key: message})


def _py(value: Any) -> str:
    """A JSON value as a Python f-string prints it (the servers format with f-strings)."""
    return str(value)


# -- reading requests -----------------------------------------------------------------
def read_request(
    spec: ModelSpec, data: Any, *, unsupported: Mapping[str, frozenset[str]]
) -> list[Instance] | Reply:
    """The revisions a request body asks about, or the server's refusal."""
    if not isinstance(data, dict):
        return _error(400, "error", "Expected a JSON object.")
    if spec.family.answer == "outlink":
        return _read_outlink(spec, data)
    if spec.max_batch > 1 and "instances" in data:
        return _read_batch(spec, data)
    if not spec.needs_lang:
        return _read_lang_free(spec, data)
    refused = _check_lang_request(spec, data, unsupported.get(spec.name, frozenset()))
    if refused is not None:
        return refused
    lang, rev_id = data["lang"], data["rev_id"]
    wiki = wiki_for(spec, lang)
    if wiki is None:
        return _unreachable(spec, lang, rev_id)
    return [Instance(rev_id, wiki, lang)]


def _read_lang_free(spec: ModelSpec, data: dict[str, Any]) -> list[Instance] | Reply:
    rev_id = data.get("rev_id")
    if spec.family.answer == "revscoring":
        # Also what a server that takes no batch says to {"instances": [...]}.
        if "rev_id" not in data:
            return _error(400, "error", 'Expected "rev_id" in input data.')
        if not _is_int(rev_id):
            return _error(400, "error", 'Expected "rev_id" to be an integer.')
    elif not _is_int(rev_id) or rev_id <= 0:
        return _error(
            400,
            "detail",
            f"Invalid rev_id: {_py(rev_id)}. The rev_id must be a positive integer.",
        )
    return [Instance(rev_id, wiki_for(spec, "") or "")]


def _check_lang_request(
    spec: ModelSpec, data: dict[str, Any], unsupported: frozenset[str]
) -> Reply | None:
    """The checks a lang-taking server makes before it fetches anything."""
    lang, rev_id = data.get("lang"), data.get("rev_id")
    family = spec.family.name
    if family == "readability":
        if lang is None:
            return _error(400, "error", "The parameter lang is required.")
        if rev_id is None:
            return _error(400, "error", "The parameter rev_id is required.")
        if lang not in _hosts() or lang in unsupported:
            return _error(400, "error", f"Unsupported lang: {_py(lang)}.")
    elif family != "articlequality":  # which checks nothing: its fetch fails instead
        # revertrisk and reference-need/-risk: kserve's check_input_param.
        if not lang:
            return _error(400, "error", "The parameter lang is required.")
        if not rev_id:
            return _error(400, "error", "The parameter rev_id is required.")
    if not isinstance(lang, str):
        return _error(400, "error", 'Expected "lang" to be a string.')
    if not _is_int(rev_id):
        return _error(400, "error", 'Expected "rev_id" to be an integer.')
    refused = _check_code(spec, lang)
    if refused is None and family.startswith("reference-") and lang in unsupported:
        return _error(400, "error", f"Unsupported lang: {_py(lang)}.")
    return refused


def _check_code(spec: ModelSpec, lang: str) -> Reply | None:
    """The revertrisk and reference-need/-risk checks of a language code."""
    if spec.family.answer == "revertrisk" or spec.family.name.startswith("reference-"):
        if lang.endswith("wiki"):
            # revertrisk raises HTTPException (detail); reference-* InvalidInput (error).
            key = "detail" if spec.family.answer == "revertrisk" else "error"
            return _error(
                400,
                key,
                "Language field should not have a 'wiki' suffix, i.e. use 'en', not 'enwiki'",
            )
    if spec.family.answer == "revertrisk":
        code = "en" if lang == _TEST else lang
        if code not in _canonical_codes():
            return _error(
                400,
                "detail",
                f"lang '{code}' does not exist in the canonical Wikipedia language list.",
            )
    return None


def _unreachable(spec: ModelSpec, lang: str, rev_id: int) -> Reply:
    """The server fetched from `{lang}.wikipedia.org` (or its rewrite), which is no wiki."""
    if spec.family.name == "articlequality":
        return _error(
            500,
            "error",
            f"Failed to get article revision with id: {rev_id}. Reason: Cannot connect to "
            f"host {lang}.wikipedia.org:443 ssl:default [Name or service not known]",
        )
    return _error(
        500,
        "error",
        "An error happened while fetching info for revision from the MediaWiki API, "
        "please contact the ML-Team if the issue persists.",
    )


def _read_batch(spec: ModelSpec, data: dict[str, Any]) -> list[Instance] | Reply:
    """revertrisk-language-agnostic's `instances`: checked in the order its server does."""
    items = data["instances"]
    if not isinstance(items, list) or not items:
        return _error(400, "error", 'Expected "instances" to be a non-empty list.')
    for count, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            return _error(400, "error", "Expected every instance to be a JSON object.")
        if not item.get("lang"):
            return _error(400, "error", "The parameter lang is required.")
        if not item.get("rev_id"):
            return _error(400, "error", "The parameter rev_id is required.")
        if count > spec.max_batch:
            return _error(
                400, "detail", f"Only accept a maximum of {spec.max_batch} rev_ids in the request."
            )
    if not all(isinstance(item["lang"], str) for item in items):
        return _error(400, "error", 'Expected "lang" to be a string.')
    if not all(_is_int(item["rev_id"]) for item in items):
        return _error(400, "error", 'Expected "rev_id" to be an integer.')
    langs = {item["lang"] for item in items}
    if len(langs) > 1:
        return _error(400, "detail", "Requesting multiple revisions should have the same language.")
    lang = langs.pop()
    refused = _check_code(spec, lang)
    if refused is not None:
        return refused
    wiki = wiki_for(spec, lang) or ""
    return [Instance(item["rev_id"], wiki, lang) for item in items]


def _read_outlink(spec: ModelSpec, data: dict[str, Any]) -> list[Instance] | Reply:
    if "lang" not in data and "wiki_id" in data:
        named = wikis().by_dbname.get(str(data["wiki_id"]))
        if named is None or not named.is_wikipedia:
            return _error(400, "error", f"Unknown wiki_id: {_py(data['wiki_id'])}")
        data = {**data, "lang": named.lang_for("host")}
    if "lang" not in data:
        return _error(400, "error", 'Missing "lang" in input data.')
    lang = data["lang"]
    if not isinstance(lang, str):
        return _error(400, "error", 'Expected "lang" to be a string.')
    page_id, title = data.get("page_id"), data.get("page_title")
    if page_id and title:
        return _error(
            400,
            "error",
            "Detected both `page_title` and `page_id` in the request. "
            "Please pass only one of those.",
        )
    if not (page_id or title):
        return _error(400, "error", "You must pass either `page_title` or `page_id`.")
    threshold = data.get("threshold", 0.5)
    if not isinstance(threshold, float):
        return _error(400, "error", 'Expected "threshold" to be a float')
    if data.get("debug"):
        threshold = 0.0  # the server's debug mode lists every topic
    rev_id = data.get("revision_id")
    if rev_id is not None and not _is_int(rev_id):
        return _error(400, "error", 'Expected "revision_id" to be an integer.')
    wiki = wiki_for(spec, lang)
    if wiki is None:
        return _error(
            500,
            "error",
            "An unexpected error has occurred while trying to get outlinks from MW API. "
            "Please contact the ML team for more info.",
        )
    article = (
        f"https://{lang}.wikipedia.org/wiki/{title}"
        if title
        else f"https://{lang}.wikipedia.org/wiki?curid={_py(page_id)}"
    )
    if rev_id is None:
        # Without revision_id the server scores the page as it is now: the emulator
        # stands its page_id (or the CRC-32 of its title) in for the current revision.
        rev_id = page_id if _is_int(page_id) else zlib.crc32(str(title).encode())
    return [Instance(rev_id, wiki, lang, article=article, threshold=threshold)]


# -- answering ------------------------------------------------------------------------
def answer(spec: ModelSpec, instance: Instance) -> dict[str, Any]:
    """The 200 body for one revision, exactly as the real model server shapes it."""
    key = score_key(spec, instance.wiki)
    rev_id = instance.rev_id
    family = spec.family
    if family.answer == "revscoring":
        return _revscoring(spec, key, rev_id)
    if family.answer == "outlink":
        scores = [
            (label, round(unit(key, rev_id, i + 1), 4)) for i, label in enumerate(family.labels)
        ]
        ranked = sorted(scores, key=lambda pair: -pair[1])  # stable: ties keep label order
        return {
            "prediction": {
                "article": instance.article,
                "results": [
                    {"topic": label, "score": score}
                    for label, score in ranked
                    if score >= instance.threshold
                ],
            }
        }
    base: dict[str, Any] = {"model_name": spec.name, "model_version": "3"}
    if spec.needs_lang:
        base["wiki_db"] = f"{instance.lang}wiki"  # as the servers build it, lang + "wiki"
    base["revision_id"] = rev_id
    score = round(unit(key, rev_id), 4)
    if family.answer == "revertrisk":
        base["output"] = {
            "prediction": score > 0.5,
            "probabilities": {"true": score, "false": round(1 - score, 4)},
        }
        return base
    target = base
    for part in family.score_field[:-1]:
        target = target.setdefault(part, {})
    target[family.score_field[-1]] = score
    if family.name == "readability":
        target["fk_score_proxy"] = round(20 * unit(key, rev_id, 1), 2)
    return base


def _revscoring(spec: ModelSpec, key: str, rev_id: int) -> dict[str, Any]:
    assert spec.wiki is not None and spec.kind is not None
    labels = spec.family.labels
    prediction: Any
    if spec.family.prediction == "bool":
        p_true = round(unit(key, rev_id), 4)
        probability = {"false": round(1 - p_true, 4), "true": p_true}
        prediction = p_true > 0.5
    elif spec.family.prediction == "list":
        probability = {label: round(unit(key, rev_id, i + 1), 4) for i, label in enumerate(labels)}
        prediction = [label for label, p in probability.items() if p > 0.5]
    else:
        weights = [unit(key, rev_id, i + 1) + 1e-9 for i in range(len(labels))]
        total = sum(weights)
        probability = {label: round(w / total, 4) for label, w in zip(labels, weights, strict=True)}
        prediction = max(probability, key=lambda label: probability[label])
    scores = {
        str(rev_id): {spec.kind: {"score": {"prediction": prediction, "probability": probability}}}
    }
    return {spec.wiki: {"models": {spec.kind: {"version": "0.5.1"}}, "scores": scores}}


def reply(
    spec: ModelSpec,
    instances: Sequence[Instance],
    *,
    batched: bool,
    problem: Callable[[int], Problem | None],
) -> Reply:
    """The answer to a request whose revisions are `instances`."""
    if spec.family.answer == "revertrisk" and spec.max_batch > 1:
        return _revertrisk_batch(spec, instances, batched=batched, problem=problem)
    instance = instances[0]
    found = problem(instance.rev_id)
    if found is None:
        return Reply(200, answer(spec, instance))
    return missing(spec, instance, found)


def missing(spec: ModelSpec, instance: Instance, problem: Problem) -> Reply:
    """What spec's server answers for a revision it cannot fetch.

    Only revscoring and outlink-topic-model tell a deleted revision from a missing one;
    the others answer both alike.
    """
    rev_id, lang = instance.rev_id, instance.lang
    family = spec.family.name
    if spec.family.answer == "revertrisk" and spec.needs_lang:
        reason = (
            f"Could not make prediction for revision {rev_id} ({lang}). Reason: revision_missing"
        )
        return _error(422, "detail", reason)
    if spec.family.answer == "revertrisk":
        return _error(
            500,
            "error",
            f"Error in preprocess for rev_id {rev_id}. Reason: Failed to fetch revision "
            f"content in _get_revision_content for rev_id {rev_id}. Reason: 'pages'",
        )
    if family == "articlequality":
        return _error(
            500,
            "error",
            f"Fetching html failed for the article revision with id: {rev_id}. Reason: Not Found",
        )
    if family == "readability":
        return _error(
            400,
            "detail",
            "The necessary features cannot be obtained from the MediaWiki API. This could be "
            "because the data does not exist or has been deleted.",
        )
    if family.startswith("reference-"):
        reason = (
            f"Could not make prediction for revision {rev_id} ({lang}). Reason: revision_missing"
        )
        return _error(400, "error", reason)
    if spec.family.answer == "outlink":
        code = "permissiondenied" if problem == "deleted" else "nosuchrevid"
        return _error(
            400,
            "detail",
            f"Cannot fetch revision {rev_id} on {lang}.wikipedia.org: "
            f"MediaWiki API error '{code}'.",
        )
    if problem == "deleted":
        return _error(
            400,
            "error",
            f"Missing resource for rev-id {rev_id}: TextDeleted: "
            "Text deleted (the revision text was suppressed)",
        )
    return _error(
        400,
        "error",
        f"The MW API does not have any info related to the rev-id provided as input "
        f"({rev_id}), therefore it is not possible to extract features properly. One possible "
        "cause is the deletion of the page related to the revision id. Please contact the "
        "ML-Team if you need more info.",
    )


def _revertrisk_batch(
    spec: ModelSpec,
    instances: Sequence[Instance],
    *,
    batched: bool,
    problem: Callable[[int], Problem | None],
) -> Reply:
    """revertrisk-language-agnostic's server, for `instances` and a single request alike.

    It keys revisions by (rev_id, lang) in a dict, so a repeated rev_id is answered once.
    """
    unique = list({i.rev_id: i for i in instances}.values())
    failed = [i for i in unique if problem(i.rev_id) is not None]
    if len(failed) == len(unique):
        keys = ", ".join(f"({i.rev_id}, {i.lang!r})" for i in unique)
        reasons = str(["revision_missing"] * len(unique))
        return _error(
            422,
            "detail",
            f"Could not make prediction for revisions dict_keys([{keys}]). Reason: {reasons}",
        )
    predictions = [answer(spec, i) for i in unique if problem(i.rev_id) is None]
    if failed:
        errors = [
            f"Could not make prediction for revision {i.rev_id} ({i.lang}). "
            "Reason: revision_missing"
            for i in failed
        ]
        return Reply(200, {"predictions": predictions, "errors": errors})
    if not batched:
        return Reply(200, predictions[0])
    return Reply(200, {"predictions": predictions})


__all__ = [
    "Instance",
    "Problem",
    "Reply",
    "answer",
    "missing",
    "read_request",
    "reply",
    "score_key",
    "unit",
    "wiki_for",
]
