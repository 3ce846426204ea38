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
from lwbatch.protocol.coverage import load_coverage
from lwbatch.wikis import SERVER_HOST_REWRITE, wikis

# What can be wrong with a revision, as MediaWiki would tell a model server:
#   missing       no such revision (or its page is deleted)
#   deleted       its text (and user) suppressed
#   parent_missing  it exists, its parent does not (reported for page creations)
#   hidden_user   its user is hidden
#   poison        fetching it raises (revertrisk then fails the whole request)
#   empty         its article has no text (articlequality)
#   not_wikitext  its content is not what the model parses (revscoring)
#   generic       feature extraction raises every time (revscoring's catch-all)
Problem = Literal[
    "missing",
    "deleted",
    "parent_missing",
    "hidden_user",
    "poison",
    "empty",
    "not_wikitext",
    "generic",
]
PROBLEMS: tuple[Problem, ...] = (
    "missing",
    "deleted",
    "parent_missing",
    "hidden_user",
    "poison",
    "empty",
    "not_wikitext",
    "generic",
)

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
    # False for a failure that says nothing about the revisions asked (a fetch that
    # raised, a wiki missing from a table, a catch-all): the emulator's `answered`
    # counts final answers only.
    final: bool = True


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
    """The codes the revertrisk servers accept: the open Wikipedias of their own copy of
    the canonical list (July 2025), shipped as lwbatch's coverage list "revertrisk"."""
    table = wikis().by_dbname
    return frozenset(table[db].lang for db in load_coverage("revertrisk").wikis if db in table)


@cache
def _feature_table() -> frozenset[str]:
    """articlequality's feature table, keyed as its server keys it: wiki_db less "wiki"."""
    return frozenset(db.replace("wiki", "") for db in load_coverage("articlequality").wikis)


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


def _error(status: int, key: str, message: str, *, final: bool = True) -> Reply:
    return Reply(status, {key: message}, final)


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
    refused = None if found is None else trouble(spec, instance, found)
    if refused is not None:
        return refused
    if spec.family.name == "articlequality" and instance.lang not in _feature_table():
        # normalize_features() indexes the feature table by the lang sent; kserve's
        # generic handler prints the exception's type.
        return _error(500, "error", f"KeyError : {instance.lang!r}", final=False)
    return Reply(200, answer(spec, instance))


def trouble(spec: ModelSpec, instance: Instance, problem: Problem) -> Reply | None:
    """What spec's server answers for a revision with `problem`, or None where the
    server does not notice it and scores the revision."""
    family = spec.family.name
    if spec.family.answer == "revscoring":
        return _revscoring_trouble(instance.rev_id, problem)
    if spec.family.answer == "revertrisk" and spec.needs_lang:
        if problem == "poison":
            return _error(500, "error", FETCH_FAILURE, final=False)
        code = _KI_CODES.get(problem)
        if code is None:
            return None
        reason = f"Could not make prediction for revision {instance.rev_id} ({instance.lang})."
        return _error(422, "detail", f"{reason} Reason: {code}")
    if spec.family.answer == "revertrisk":
        return _wikidata_trouble(instance.rev_id, problem)
    if family == "articlequality":
        return _articlequality_trouble(instance, problem)
    if family == "readability" and problem in ("missing", "deleted"):
        return _error(
            400,
            "detail",
            "The necessary features cannot be obtained from the MediaWiki API. This could be "
            "because the data does not exist or has been deleted.",
        )
    if family.startswith("reference-"):
        return _reference_trouble(instance, problem)
    if spec.family.answer == "outlink" and problem in ("missing", "deleted"):
        code = "permissiondenied" if problem == "deleted" else "nosuchrevid"
        return _error(
            400,
            "detail",
            f"Cannot fetch revision {instance.rev_id} on {instance.lang}.wikipedia.org: "
            f"MediaWiki API error '{code}'.",
        )
    return None


# revertrisk's servers when fetching a revision raised (base_model.py, batch_model.py).
FETCH_FAILURE = (
    "An error happened while fetching info for revision from the MediaWiki API, please "
    "contact the ML-Team if the issue persists."
)
# knowledge_integrity's error codes, as revertrisk prints them ("Reason: CODE").
_KI_CODES: dict[str, str] = {
    "missing": "revision_missing",
    "deleted": "revision_info_deleted",
    "parent_missing": "parent_revision_missing",
}


def _revscoring_trouble(rev_id: int, problem: Problem) -> Reply | None:
    """extractor_utils.py: badrevids, then fetch_features' InvalidInput around
    revscoring's exceptions, whose text names the data source (revscoring/errors.py)."""
    where = f"Missing resource for rev-id {rev_id}:"
    if problem == "missing":
        return _error(
            400,
            "error",
            f"The MW API does not have any info related to the rev-id provided as input "
            f"({rev_id}), therefore it is not possible to extract features properly. One "
            "possible cause is the deletion of the page related to the revision id. Please "
            "contact the ML-Team if you need more info.",
        )
    texts = {
        "deleted": f"{where} TextDeleted: Text deleted (datasource.revision.text)",
        "hidden_user": f"{where} UserDeleted: User deleted ({{revision.user}})",
        "parent_missing": f"{where} RevisionNotFound: Could not find revision "
        f"({{revision.parent}}:{rev_id - 1})",
        "not_wikitext": f"Unexpected content type for rev-id {rev_id}: UnexpectedContentType: "
        "Expected content of type JSON, but the following can't be parsed (max 50 chars "
        "showed): {{Infobox person",
        "generic": f"Generic error while extracting features for rev-id {rev_id}: "
        "ConnectionResetError: [Errno 104] Connection reset by peer",
    }
    text = texts.get(problem)
    return None if text is None else _error(400, "error", text, final=problem != "generic")


def _wikidata_trouble(rev_id: int, problem: Problem) -> Reply | None:
    """revertrisk-wikidata's preprocess: revision content, then its parent's, then the
    metadata (which reads revision["user"]), any exception a 500."""
    fetched = {"missing": rev_id, "parent_missing": rev_id - 1}.get(problem)
    if fetched is not None:
        reason = (
            f"Failed to fetch revision content in _get_revision_content for rev_id {fetched}. "
            "Reason: 'pages'"
        )
    elif problem in ("deleted", "hidden_user"):
        reason = (
            f"Failed to fetch metadata features in _fetch_metadata_features for rev_id "
            f"{rev_id}. Reason: 'user'"
        )
    else:
        return None
    return _error(500, "error", f"Error in preprocess for rev_id {rev_id}. Reason: {reason}")


def _articlequality_trouble(instance: Instance, problem: Problem) -> Reply | None:
    """get_article_html: the REST API's status first ([404] / [403], Wikimedia's kserve
    fork); an article with no text fails its preprocessing."""
    rev_id = instance.rev_id
    upstream = {"missing": ("404", "Not Found"), "deleted": ("403", "Forbidden")}.get(problem)
    if upstream is not None:
        status, reason = upstream
        return _error(
            500,
            "error",
            f"[{status}] Fetching html failed for the article revision with id: {rev_id}. "
            f"Reason: {reason}",
        )
    if problem == "empty":
        return _error(
            500,
            "error",
            f"Article with language {instance.lang} and revid {rev_id} has errors when "
            "preprocessing",
        )
    return None


def _reference_trouble(instance: Instance, problem: Problem) -> Reply | None:
    """reference-need/-risk print knowledge_integrity's Error.response_body, MediaWiki's
    answer, as Python prints a dict (since Feb 2025)."""
    rev_id = instance.rev_id
    body: dict[str, Any]
    if problem in ("missing", "parent_missing"):
        named = rev_id if problem == "missing" else rev_id - 1
        body = {
            "batchcomplete": True,
            "query": {"badrevids": {str(named): {"revid": named, "missing": True}}},
        }
    elif problem == "deleted":
        revision = {"revid": rev_id, "texthidden": True}
        page = {"pageid": 9, "revisions": [revision]}
        body = {"batchcomplete": True, "query": {"pages": {"9": page}}}
    elif problem == "poison":
        return _error(500, "error", FETCH_FAILURE, final=False)
    else:
        return None
    return _error(
        400,
        "error",
        f"Could not make prediction for revision {rev_id} ({instance.lang}). Reason: {body}",
    )


def _revertrisk_batch(
    spec: ModelSpec,
    instances: Sequence[Instance],
    *,
    batched: bool,
    problem: Callable[[int], Problem | None],
) -> Reply:
    """revertrisk-language-agnostic's server, for `instances` and a single request alike.

    It fetches every revision first: one whose fetch raises fails the whole request.
    It keys revisions by (rev_id, lang) in a dict, so a repeated rev_id is answered once.
    """
    unique = list({i.rev_id: i for i in instances}.values())
    found = {i.rev_id: problem(i.rev_id) for i in unique}
    if "poison" in found.values():
        return _error(500, "error", FETCH_FAILURE, final=False)
    codes = {rev: _KI_CODES[p] for rev, p in found.items() if p is not None and p in _KI_CODES}
    failed = [i for i in unique if i.rev_id in codes]
    if len(failed) == len(unique):
        keys = ", ".join(f"({i.rev_id}, {i.lang!r})" for i in unique)
        reasons = str([codes[i.rev_id] for i in unique])
        return _error(
            422,
            "detail",
            f"Could not make prediction for revisions dict_keys([{keys}]). Reason: {reasons}",
        )
    predictions = [answer(spec, i) for i in unique if i.rev_id not in codes]
    if failed:
        errors = [
            f"Could not make prediction for revision {i.rev_id} ({i.lang}). "
            f"Reason: {codes[i.rev_id]}"
            for i in failed
        ]
        return Reply(200, {"predictions": predictions, "errors": errors})
    if not batched:
        return Reply(200, predictions[0])
    return Reply(200, {"predictions": predictions})


__all__ = [
    "FETCH_FAILURE",
    "PROBLEMS",
    "Instance",
    "Problem",
    "Reply",
    "answer",
    "read_request",
    "reply",
    "score_key",
    "trouble",
    "unit",
    "wiki_for",
]
