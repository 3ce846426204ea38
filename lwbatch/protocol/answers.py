"""Lift Wing answers -> :class:`Score` values.

Every family's response shape is parsed here, and every error body that is a final
answer is mapped to an :class:`ErrorType`. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import ErrorType, Prediction, Score

_BATCH_ERROR_REV = re.compile(r"revision (\d+)")
_MAX_MESSAGE = 300

# Each rule below matches the bodies of named model servers (inference-services),
# quoted in its comment; a body no rule matches keeps its status's default meaning.

# 500s: kserve turns an InferenceError into 500 {"error": ...}, so a revision that
# cannot be fetched looks like an outage; retrying it only spends budget.
_SERVER_NOT_FOUND = (
    # revertrisk-wikidata, MediaWiki's answer has no `pages` (no such revision):
    # "Error in preprocess for rev_id N. Reason: Failed to fetch revision content in
    # _get_revision_content for rev_id N. Reason: 'pages'"
    re.compile(
        r"Failed to fetch revision content in _get_revision_content for rev_id \d+\. "
        r"Reason: 'pages'$"
    ),
    # articlequality, the REST API answered 404:
    # "Fetching html failed for the article revision with id: N. Reason: Not Found"
    re.compile(r"^Fetching html failed for the article revision with id: \d+\. Reason: Not Found$"),
)

# 400s that are final for every revision of that (model, language).
_UNSUPPORTED_LANG = (
    # readability (and other servers' check_supported_wikis): "Unsupported lang: xx."
    re.compile(r"^Unsupported lang: "),
    # revertrisk: "lang 'xx' does not exist in the canonical Wikipedia language list."
    re.compile(r"^lang '[^']*' does not exist in the canonical Wikipedia language list\.$"),
)
# revscoring 400: "The MW API does not have any info related to the rev-id provided as
# input (N), ..." (badrevids: unknown revision or deleted page)
_NO_INFO = "The MW API does not have any info related to the rev-id"
# readability 400: "The necessary features cannot be obtained from the MediaWiki API.
# This could be because the data does not exist or has been deleted."
_NO_FEATURES = "The necessary features cannot be obtained from the MediaWiki API."
# revscoring 400: "Missing resource for rev-id N: KIND: ..." (KIND: a revscoring
# MissingResource class); any other kind is unscorable.
_MISSING_RESOURCE = re.compile(r"^Missing resource for rev-id \d+: (\w+)")
_MISSING_RESOURCE_KINDS = {
    "TextDeleted": ErrorType.DELETED,
    "CommentDeleted": ErrorType.DELETED,
    "UserDeleted": ErrorType.DELETED,
    "RevisionNotFound": ErrorType.NOT_FOUND,
    "PageNotFound": ErrorType.NOT_FOUND,
}
# outlink-topic-model 400: "Cannot fetch revision N on xx.wikipedia.org: MediaWiki API
# error 'CODE'." (other codes, e.g. invalidtitle, stay bad_request)
_MW_API_ERROR = re.compile(r"^Cannot fetch revision \d+ on \S+: MediaWiki API error '(\w+)'\.$")
_MW_API_CODES = {"nosuchrevid": ErrorType.NOT_FOUND, "permissiondenied": ErrorType.DELETED}
# reference-need/risk (400), revertrisk (422, and each item of a batch's `errors`):
# "Could not make prediction for revision N (xx). Reason: CODE"
_NO_PREDICTION = re.compile(
    r"^Could not make prediction for revision \d+ \([^)]*\)\. Reason: (\w+)$"
)
_MISSING_REVISION_CODES = frozenset({"revision_missing", "parent_revision_missing"})
# revertrisk's batch server when every revision of a request fails (422, even for one):
# "Could not make prediction for revisions dict_keys([(N, 'xx'), ...]). Reason: ['CODE', ...]"
_ALL_FAILED = re.compile(
    r"^Could not make prediction for revisions dict_keys\(\[(.*)\]\)\. Reason: \[(.*)\]$"
)
_ALL_FAILED_REVISION = re.compile(r"\((\d+), '[^']*'\)")
_ALL_FAILED_CODE = re.compile(r"'(\w+)'")
# RFC 9110 11.6.1: challenges are comma-separated, each starting with its scheme.
_BEARER_CHALLENGE = re.compile(r"(?:^|,)\s*Bearer(?:\s|,|$)", re.IGNORECASE)


class BadAnswer(Exception):
    """A 2xx body that is not the model's answer shape (internal to this module)."""


def error_message(body: bytes) -> str:
    """The human message of an error body: its `error` or `detail`, else its text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:_MAX_MESSAGE]
    if isinstance(data, dict):
        for key in ("error", "detail", "httpReason", "message"):
            value = data.get(key)
            if value:
                text = value if isinstance(value, str) else orjson.dumps(value).decode()
                return text[:_MAX_MESSAGE]
    return orjson.dumps(data).decode()[:_MAX_MESSAGE]


def classify_server_error(status: int, message: str) -> ErrorType | None:
    """A 5xx that is a final answer -> its error type; None: transient, retry it."""
    if status == 500 and any(rule.search(message) for rule in _SERVER_NOT_FOUND):
        return ErrorType.NOT_FOUND
    return None


def classify_client_error(status: int, message: str) -> ErrorType:
    """Terminal 4xx (not 401/404/429, which the dispatcher handles) -> error type."""
    if status == 422:
        return _missing_revision(message) or ErrorType.UNSCORABLE
    if status != 400:
        return ErrorType.BAD_REQUEST
    if any(rule.search(message) for rule in _UNSUPPORTED_LANG):
        return ErrorType.UNSUPPORTED_WIKI
    if message.startswith((_NO_INFO, _NO_FEATURES)):
        return ErrorType.NOT_FOUND
    if match := _MISSING_RESOURCE.match(message):
        return _MISSING_RESOURCE_KINDS.get(match[1], ErrorType.UNSCORABLE)
    if (match := _MW_API_ERROR.match(message)) and match[1] in _MW_API_CODES:
        return _MW_API_CODES[match[1]]
    return _missing_revision(message) or ErrorType.BAD_REQUEST


def all_failed(body: bytes) -> dict[int, Score] | None:
    """A score per revision of a batch server's "every revision failed" 422, read from
    the whole body (the message is longer than the one a score keeps), or None."""
    message = _full_message(body)
    match = _ALL_FAILED.match(message) if message else None
    if match is None:
        return None
    revisions = [int(rev) for rev in _ALL_FAILED_REVISION.findall(match[1])]
    codes = _ALL_FAILED_CODE.findall(match[2])
    if not revisions or len(revisions) != len(codes):
        return None
    return {
        rev: Score.failed(
            ErrorType.NOT_FOUND if code in _MISSING_REVISION_CODES else ErrorType.UNSCORABLE,
            f"Could not make prediction for revision {rev}. Reason: {code}",
        )
        for rev, code in zip(revisions, codes, strict=True)
    }


def _full_message(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    detail = data.get("detail") if isinstance(data, dict) else None
    return detail if isinstance(detail, str) else None


def is_bearer_challenge(www_authenticate: str | None) -> bool:
    """Whether a WWW-Authenticate header asks for a bearer token."""
    return www_authenticate is not None and bool(_BEARER_CHALLENGE.search(www_authenticate))


def _missing_revision(message: str) -> ErrorType | None:
    match = _NO_PREDICTION.match(message)
    return ErrorType.NOT_FOUND if match and match[1] in _MISSING_REVISION_CODES else None


def parse_answer(spec: ModelSpec, rev_ids: Sequence[int], body: bytes) -> dict[int, Score]:
    """Scores for every revision of a 2xx answer; batch answers match by revision_id."""
    try:
        data = orjson.loads(body)
        if not isinstance(data, dict):
            raise BadAnswer(f"expected a JSON object, got {type(data).__name__}")
        if len(rev_ids) > 1 or "predictions" in data:
            return _parse_batch(spec, rev_ids, data)
        return {rev_ids[0]: _parse_one(spec, rev_ids[0], data)}
    except (orjson.JSONDecodeError, BadAnswer, KeyError, TypeError, ValueError) as exc:
        message = f"{spec.name} answered 200 with an unexpected body: {_describe(exc)}"
        return {rev_id: Score.failed(ErrorType.BAD_RESPONSE, message) for rev_id in rev_ids}


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing key {exc}"
    return str(exc)[:_MAX_MESSAGE]


def _parse_batch(
    spec: ModelSpec, rev_ids: Sequence[int], data: Mapping[str, Any]
) -> dict[int, Score]:
    found: dict[int, Score] = {}
    for item in data["predictions"]:
        rev_id = int(item["revision_id"])
        found[rev_id] = _parse_one(spec, rev_id, item)
    for message in data.get("errors") or ():
        match = _BATCH_ERROR_REV.search(str(message))
        if match:
            error = _missing_revision(str(message)) or ErrorType.UNSCORABLE
            found.setdefault(int(match.group(1)), Score.failed(error, str(message)))
    missing = Score.failed(
        ErrorType.BAD_RESPONSE, f"{spec.name} left this revision out of its batch answer"
    )
    return {rev_id: found.get(rev_id, missing) for rev_id in rev_ids}


def _parse_one(spec: ModelSpec, rev_id: int, data: Mapping[str, Any]) -> Score:
    shape = spec.family.answer
    if shape == "revscoring":
        return _revscoring(spec, rev_id, data)
    if shape == "revertrisk":
        output = data["output"]
        return Score(
            prediction=_prediction(spec, output["prediction"]),
            probability=_probability(output.get("probabilities")),
            model_version=_version(data.get("model_version")),
        )
    if shape == "outlink":
        return _outlink(spec, data)
    value: Any = data
    for key in spec.family.score_field:
        value = value[key]
    return Score(
        prediction=_prediction(spec, value),
        probability=None,
        model_version=_version(data.get("model_version")),
    )


def _outlink(spec: ModelSpec, data: Mapping[str, Any]) -> Score:
    # {"prediction": {"article": URL, "results": [{"topic", "score"}, ...]}}: the topics
    # at or above the server's threshold (0.5), best first; the answer names no version.
    results = data["prediction"]["results"]
    if not isinstance(results, list):
        raise BadAnswer(f"results {results!r} is not a list")
    topics = [str(item["topic"]) for item in results]
    return Score(
        prediction=_prediction(spec, topics),
        probability=_probability({item["topic"]: item["score"] for item in results}),
        model_version=None,
    )


def _revscoring(spec: ModelSpec, rev_id: int, data: Mapping[str, Any]) -> Score:
    assert spec.wiki is not None and spec.kind is not None  # guaranteed by the catalogue
    wiki = data[spec.wiki]
    version = _version(wiki.get("models", {}).get(spec.kind, {}).get("version"))
    entry = wiki["scores"][str(rev_id)][spec.kind]
    score = entry["score"]
    return Score(
        prediction=_prediction(spec, score["prediction"]),
        probability=_probability(score.get("probability")),
        model_version=version,
    )


def _prediction(spec: ModelSpec, value: Any) -> Prediction:
    expected = spec.family.prediction
    if expected == "bool" and isinstance(value, bool):
        return value
    if expected == "string" and isinstance(value, str):
        return value
    if expected == "list" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if expected == "double" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise BadAnswer(f"prediction {value!r} is not of type {expected}")


def _probability(value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadAnswer(f"probability {value!r} is not an object")
    return {str(k): float(v) for k, v in value.items()}


def _version(value: Any) -> str | None:
    return None if value is None else str(value)
