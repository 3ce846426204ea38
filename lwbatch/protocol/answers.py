"""Lift Wing answers -> :class:`Score` values.

Every family's response shape is parsed here, and every terminal HTTP error is mapped
to an :class:`ErrorType`. Nothing here does I/O.
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


def classify_client_error(status: int, message: str) -> ErrorType:
    """Terminal 4xx (not 401/404/429, which the dispatcher handles) -> error type."""
    if status == 422:
        return ErrorType.UNSCORABLE
    if status == 400:
        if "does not have any info" in message:
            return ErrorType.NOT_FOUND
        if "Missing resource" in message or "Deleted" in message:
            return ErrorType.DELETED
    return ErrorType.BAD_REQUEST


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
            found.setdefault(int(match.group(1)), Score.failed(ErrorType.UNSCORABLE, str(message)))
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
    value: Any = data
    for key in spec.family.score_field:
        value = value[key]
    return Score(
        prediction=_prediction(spec, value),
        probability=None,
        model_version=_version(data.get("model_version")),
    )


def _revscoring(spec: ModelSpec, rev_id: int, data: Mapping[str, Any]) -> Score:
    assert spec.wiki is not None and spec.kind is not None  # guaranteed by the catalogue
    wiki = data[spec.wiki]
    version = _version(wiki.get("models", {}).get(spec.kind, {}).get("version"))
    entry = wiki["scores"][str(rev_id)][spec.kind]
    if "error" in entry:
        # ORES-style per-revision error inside a 200 answer.
        error = entry["error"]
        message = str(error.get("message", error))
        kind = str(error.get("type", ""))
        if "NotFound" in kind:
            return Score.failed(ErrorType.NOT_FOUND, message)
        if "Deleted" in kind or "Deleted" in message:
            return Score.failed(ErrorType.DELETED, message)
        return Score.failed(ErrorType.UNSCORABLE, message)
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
