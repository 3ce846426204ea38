"""Lift Wing's 2xx answers -> :class:`Score` values.

Every family's response shape is parsed here; what an error body means is
lwbatch/protocol/failures.py's business. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from lwbatch.protocol.catalog import ModelSpec
from lwbatch.protocol.failures import MAX_MESSAGE, batch_item_score
from lwbatch.results import ErrorType, Prediction, Score

_BATCH_ERROR_REV = re.compile(r"revision (\d+)")
# RFC 9110 11.6.1: challenges are comma-separated, each starting with its scheme.
_BEARER_CHALLENGE = re.compile(r"(?:^|,)\s*Bearer(?:\s|,|$)", re.IGNORECASE)


class BadAnswer(Exception):
    """A 2xx body that is not the model's answer shape (internal to this module)."""


def is_bearer_challenge(www_authenticate: str | None) -> bool:
    """Whether a WWW-Authenticate header asks for a bearer token."""
    return www_authenticate is not None and bool(_BEARER_CHALLENGE.search(www_authenticate))


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
    return str(exc)[:MAX_MESSAGE]


def _parse_batch(
    spec: ModelSpec, rev_ids: Sequence[int], data: Mapping[str, Any]
) -> dict[int, Score]:
    found: dict[int, Score] = {}
    failures = list(data.get("errors") or ())
    for item in data["predictions"]:
        if isinstance(item, str):
            # An older batch server (207) put its error strings among the predictions.
            failures.append(item)
            continue
        rev_id = int(item["revision_id"])
        found[rev_id] = _parse_one(spec, rev_id, item)
    for message in failures:
        match = _BATCH_ERROR_REV.search(str(message))
        if match:
            found.setdefault(int(match.group(1)), batch_item_score(str(message)))
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
