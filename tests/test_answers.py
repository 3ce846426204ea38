from __future__ import annotations

import orjson
import pytest

from lwbatch.protocol.answers import is_bearer_challenge, parse_answer
from lwbatch.protocol.catalog import default_catalog
from lwbatch.results import ErrorType, Score


def spec(name: str):  # type: ignore[no-untyped-def]
    return default_catalog().resolve(name)


def body(data: object) -> bytes:
    return orjson.dumps(data)


def test_revscoring_binary() -> None:
    answer = {
        "enwiki": {
            "models": {"damaging": {"version": "0.5.1"}},
            "scores": {
                "12345": {
                    "damaging": {
                        "score": {
                            "prediction": False,
                            "probability": {"false": 0.7442, "true": 0.2557},
                        }
                    }
                }
            },
        }
    }
    assert parse_answer(spec("enwiki-damaging"), [12345], body(answer)) == {
        12345: Score(False, {"false": 0.7442, "true": 0.2557}, "0.5.1")
    }


def test_revscoring_class_label_and_topic_list() -> None:
    quality = {
        "enwiki": {
            "models": {"articlequality": {"version": "0.9.2"}},
            "scores": {
                "7": {
                    "articlequality": {
                        "score": {"prediction": "GA", "probability": {"GA": 0.6, "FA": 0.4}}
                    }
                }
            },
        }
    }
    topic = {
        "enwiki": {
            "models": {"articletopic": {"version": "1.3.0"}},
            "scores": {
                "7": {
                    "articletopic": {
                        "score": {"prediction": ["STEM.STEM*"], "probability": {"STEM.STEM*": 0.9}}
                    }
                }
            },
        }
    }
    assert parse_answer(spec("enwiki-articlequality"), [7], body(quality))[7].prediction == "GA"
    assert parse_answer(spec("enwiki-articletopic"), [7], body(topic))[7] == Score(
        ["STEM.STEM*"], {"STEM.STEM*": 0.9}, "1.3.0"
    )


def test_revertrisk_single() -> None:
    answer = {
        "model_name": "revertrisk-language-agnostic",
        "model_version": "3",
        "wiki_db": "enwiki",
        "revision_id": 12345,
        "output": {"prediction": False, "probabilities": {"true": 0.1769, "false": 0.8231}},
    }
    assert parse_answer(spec("revertrisk-language-agnostic"), [12345], body(answer)) == {
        12345: Score(False, {"true": 0.1769, "false": 0.8231}, "3")
    }


def test_batch_is_matched_by_revision_id_not_position() -> None:
    def item(rev: int, p: float) -> dict[str, object]:
        return {
            "model_name": "revertrisk-language-agnostic",
            "model_version": "3",
            "wiki_db": "enwiki",
            "revision_id": rev,
            "output": {"prediction": p > 0.5, "probabilities": {"true": p, "false": 1 - p}},
        }

    answer = {
        "predictions": [item(3, 0.9), item(1, 0.1)],
        "errors": ["Could not make prediction for revision 2 (en). Reason: gone"],
    }
    scores = parse_answer(spec("revertrisk-language-agnostic"), [1, 2, 3, 4], body(answer))
    assert scores[1].prediction is False and scores[1].probability == {"true": 0.1, "false": 0.9}
    assert scores[3].prediction is True
    assert scores[2] == Score.failed(
        ErrorType.UNSCORABLE, "Could not make prediction for revision 2 (en). Reason: gone"
    )
    assert scores[4].error is ErrorType.BAD_RESPONSE


@pytest.mark.parametrize(
    ("name", "answer", "value"),
    [
        (
            "articlequality",
            {
                "score": 0.1,
                "model_name": "articlequality",
                "model_version": "1",
                "wiki_db": "enwiki",
                "revision_id": 5,
            },
            0.1,
        ),
        (
            "readability",
            {
                "model_name": "readability",
                "model_version": "2",
                "wiki_db": "enwiki",
                "revision_id": 5,
                "output": {"score": 0.64, "fk_score_proxy": 9.39},
            },
            0.64,
        ),
        (
            "reference-need",
            {
                "model_name": "reference-need",
                "model_version": "0",
                "wiki_db": "enwiki",
                "revision_id": 5,
                "reference_need_score": 0.25,
            },
            0.25,
        ),
        (
            "reference-risk",
            {
                "model_name": "reference-risk",
                "model_version": "0",
                "wiki_db": "enwiki",
                "revision_id": 5,
                "reference_risk_score": 1,
            },
            1.0,
        ),
    ],
)
def test_score_only_models(name: str, answer: dict[str, object], value: float) -> None:
    score = parse_answer(spec(name), [5], body(answer))[5]
    assert score.prediction == value and isinstance(score.prediction, float)
    assert score.probability is None and score.error is None


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        body({"enwiki": {"scores": {}}}),
        body({"output": {"prediction": "yes"}}),
    ],
)
def test_unexpected_200_bodies_become_bad_response(raw: bytes) -> None:
    for name in ("enwiki-damaging", "revertrisk-language-agnostic"):
        score = parse_answer(spec(name), [9], raw)[9]
        assert score.error is ErrorType.BAD_RESPONSE
        assert score.error_message is not None and score.error_message.startswith(
            f"{name} answered 200"
        )


def test_a_revscoring_200_without_a_score_is_a_bad_response() -> None:
    # ORES put per-revision errors inside a 200; Lift Wing never does, so such a body is
    # malformed like any other.
    answer = {
        "enwiki": {
            "models": {},
            "scores": {
                "2": {
                    "damaging": {
                        "error": {
                            "type": "RevisionNotFound",
                            "message": "RevisionNotFound: Could not find revision ({revision}:2)",
                        }
                    }
                }
            },
        }
    }
    assert parse_answer(spec("enwiki-damaging"), [2], body(answer)) == {
        2: Score(
            error=ErrorType.BAD_RESPONSE,
            error_message="enwiki-damaging answered 200 with an unexpected body: "
            "missing key 'score'",
        )
    }


def test_batch_errors_are_labelled_by_their_code() -> None:
    answer = {
        "predictions": [],
        "errors": [
            "Could not make prediction for revision 1 (en). Reason: revision_missing",
            "Could not make prediction for revision 2 (en). Reason: parent_revision_missing",
            "Could not make prediction for revision 3 (en). Reason: other_reason",
        ],
    }
    scores = parse_answer(spec("revertrisk-language-agnostic"), [1, 2, 3], body(answer))
    assert scores == {
        1: Score.failed(
            ErrorType.NOT_FOUND,
            "Could not make prediction for revision 1 (en). Reason: revision_missing",
        ),
        2: Score.failed(
            ErrorType.UNSCORABLE,
            "parent revision missing: "
            "Could not make prediction for revision 2 (en). Reason: parent_revision_missing",
        ),
        3: Score.failed(
            ErrorType.UNSCORABLE,
            "Could not make prediction for revision 3 (en). Reason: other_reason",
        ),
    }
    # A sentence of another shape that names the revision is kept as it is.
    answer = {"predictions": [], "errors": ["revision 4 could not be scored"]}
    scores = parse_answer(spec("revertrisk-language-agnostic"), [4], body(answer))
    assert scores == {4: Score.failed(ErrorType.UNSCORABLE, "revision 4 could not be scored")}


def test_error_strings_among_the_predictions_of_an_older_server() -> None:
    # An older batch server answered 207 with its error strings inside `predictions`.
    answer = {
        "predictions": [
            {
                "model_name": "revertrisk-language-agnostic",
                "model_version": "3",
                "wiki_db": "enwiki",
                "revision_id": 1,
                "output": {"prediction": True, "probabilities": {"true": 0.9, "false": 0.1}},
            },
            "Could not make prediction for revision 2 (en). Reason: revision_missing",
            "Could not make prediction for revision 3 (en). Reason: revision_info_deleted",
        ]
    }
    scores = parse_answer(spec("revertrisk-language-agnostic"), [1, 2, 3], body(answer))
    assert scores == {
        1: Score(prediction=True, probability={"true": 0.9, "false": 0.1}, model_version="3"),
        2: Score.failed(
            ErrorType.NOT_FOUND,
            "Could not make prediction for revision 2 (en). Reason: revision_missing",
        ),
        3: Score.failed(
            ErrorType.DELETED,
            "Could not make prediction for revision 3 (en). Reason: revision_info_deleted",
        ),
    }


@pytest.mark.parametrize(
    ("header", "bearer"),
    [
        ('Bearer realm="api.wikimedia.org"', True),
        ("Bearer", True),
        ('bearer error="invalid_token"', True),
        ('Basic realm="x", Bearer realm="y"', True),
        ('Basic realm="x"', False),
        ("BearerToken", False),
        (None, False),
        ("", False),
    ],
)
def test_bearer_challenge(header: str | None, bearer: bool) -> None:
    assert is_bearer_challenge(header) is bearer
