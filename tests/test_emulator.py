"""The emulator answers like Lift Wing: shapes, errors, gateway budget."""

from __future__ import annotations

import math
from typing import Any

import httpx
import orjson
import pytest

from lwbatch.config import Rate
from lwbatch.errors import UsageError
from lwbatch.testing.emulator import Latency, unit
from tests.conftest import EmulatorFactory, emulated_p_true


def post(base_url: str, model: str, payload: object, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/models/{model}:predict", content=orjson.dumps(payload), headers=headers
    )


def structure(value: Any, label_maps: frozenset[str] = frozenset()) -> Any:
    """The keys, value types and nesting of a JSON document, without its values.

    A list is the distinct structures of its items. A dict under a key in `label_maps`
    (a topic model's probability for each of its many labels) is one entry, "<label>",
    per distinct structure of its values.
    """
    if isinstance(value, dict):
        return {
            key: (
                {"<label>": structure(list(item.values()))}
                if key in label_maps and isinstance(item, dict)
                else structure(item, label_maps)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        shapes: list[Any] = []
        for item in value:
            if (shape := structure(item, label_maps)) not in shapes:
                shapes.append(shape)
        return shapes
    return type(value).__name__


# Bodies of the real model servers, copied from shared/liftwing-api.md (sections 2 and
# 3c; verbatim where it quotes them). Where it only describes a family, the body is
# written from that description: the label sets of the revscoring quality models, the
# fields of revertrisk-wikidata ("no wiki_db") and of reference-need/-risk.
DAMAGING = """{"enwiki":{"models":{"damaging":{"version":"0.5.1"}},"scores":{"1097728152":
{"damaging":{"score":{"prediction":false,"probability":{"false":0.5818192554457859,
"true":0.4181807445542141}}}}}}}"""
ITEMTOPIC = """{"wikidatawiki":{"models":{"itemtopic":{"version":"1.2.0"}},"scores":{"12345":
{"itemtopic":{"score":{"prediction":["STEM.STEM*"],"probability":
{"Culture.Biography.Biography*":0.0037221493203970753}}}}}}}"""
REVERTRISK = """{"model_name": "revertrisk-language-agnostic", "model_version": "3",
"wiki_db": "enwiki", "revision_id": 12345, "output": {"prediction": false,
"probabilities": {"true": 0.1769, "false": 0.8231}}}"""
BATCH = """{"predictions":[{"model_name":"revertrisk-language-agnostic","model_version":"v1",
"wiki_db":"enwiki","revision_id":123456789,"output":{"prediction":false,"probabilities":
{"true":0.3403553068637848,"false":0.6596446931362152}}}]}"""
READABILITY = """{"model_name":"readability","model_version":"v1","wiki_db":"enwiki",
"revision_id":123456789,"output":{"score":0.6433582305908203,"fk_score_proxy":9.397851597845303}}"""
ARTICLEQUALITY = """{"score": 0.10, "model_name": "articlequality", "model_version": "1",
"wiki_db": "enwiki", "revision_id": 12345}"""


def revscoring(wiki: str, kind: str, prediction: Any, labels: list[str]) -> str:
    """A revscoring answer for revision 12345, as section 2 of liftwing-api.md shapes it."""
    probability = {label: 1 / len(labels) for label in labels}
    return orjson.dumps(
        {
            wiki: {
                "models": {kind: {"version": "0.5.1"}},
                "scores": {
                    "12345": {
                        kind: {"score": {"prediction": prediction, "probability": probability}}
                    }
                },
            }
        }
    ).decode()


def retitled(body: str, **changes: Any) -> str:
    data = orjson.loads(body)
    data.update({k: v for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]
    return orjson.dumps(data).decode()


TOPIC = frozenset({"probability"})
# model: (payload, documented body, label maps, whether the body lists every field)
DOCUMENTED: dict[str, tuple[dict[str, Any], str, frozenset[str], bool]] = {
    "enwiki-damaging": ({"rev_id": 1097728152}, DAMAGING, frozenset(), True),
    "enwiki-articlequality": (
        {"rev_id": 12345},
        revscoring("enwiki", "articlequality", "GA", ["Stub", "Start", "C", "B", "GA", "FA"]),
        frozenset(),
        True,
    ),
    "enwiki-draftquality": (
        {"rev_id": 12345},
        revscoring("enwiki", "draftquality", "OK", ["OK", "attack", "spam", "vandalism"]),
        frozenset(),
        True,
    ),
    "wikidatawiki-itemquality": (
        {"rev_id": 12345},
        revscoring("wikidatawiki", "itemquality", "A", ["A", "B", "C", "D", "E"]),
        frozenset(),
        True,
    ),
    "wikidatawiki-itemtopic": ({"rev_id": 12345}, ITEMTOPIC, TOPIC, True),
    "enwiki-articletopic": (
        {"rev_id": 12345},
        ITEMTOPIC.replace("wikidatawiki", "enwiki").replace("itemtopic", "articletopic"),
        TOPIC,
        True,
    ),
    "enwiki-drafttopic": (
        {"rev_id": 12345},
        ITEMTOPIC.replace("wikidatawiki", "enwiki").replace("itemtopic", "drafttopic"),
        TOPIC,
        True,
    ),
    "revertrisk-language-agnostic": (
        {"rev_id": 12345, "lang": "en"},
        REVERTRISK,
        frozenset(),
        True,
    ),
    "revertrisk-multilingual": (
        {"rev_id": 12345, "lang": "en"},
        retitled(REVERTRISK, model_name="revertrisk-multilingual"),
        frozenset(),
        True,
    ),
    "revertrisk-wikidata": (
        {"rev_id": 12345},
        retitled(REVERTRISK, model_name="revertrisk-wikidata", wiki_db=None),
        frozenset(),
        True,
    ),
    "articlequality": ({"rev_id": 12345, "lang": "en"}, ARTICLEQUALITY, frozenset(), True),
    "readability": ({"rev_id": 123456789, "lang": "en"}, READABILITY, frozenset(), True),
    # "reference_need_score / reference_risk_score plus details": only those are checked.
    "reference-need": (
        {"rev_id": 12345, "lang": "en"},
        '{"model_name": "reference-need", "wiki_db": "enwiki", "revision_id": 12345,'
        ' "reference_need_score": 0.25}',
        frozenset(),
        False,
    ),
    "reference-risk": (
        {"rev_id": 12345, "lang": "en"},
        '{"model_name": "reference-risk", "wiki_db": "enwiki", "revision_id": 12345,'
        ' "reference_risk_score": 0.5}',
        frozenset(),
        False,
    ),
}


def test_unit_is_deterministic_and_spread() -> None:
    assert unit("enwiki-damaging", 12345) == unit("enwiki-damaging", 12345)
    assert unit("enwiki-damaging", 12345) != unit("enwiki-goodfaith", 12345)
    values = [unit("m", i) for i in range(2000)]
    assert 0.45 < sum(values) / len(values) < 0.55 and min(values) >= 0 and max(values) < 1


@pytest.mark.parametrize("model", list(DOCUMENTED))
def test_every_family_answers_the_documented_shape(
    running_emulator: tuple[object, str], model: str
) -> None:
    _, base_url = running_emulator
    payload, documented, label_maps, complete = DOCUMENTED[model]
    response = post(base_url, model, payload)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    expected = structure(orjson.loads(documented), label_maps)
    if not complete:
        body = {key: body[key] for key in expected if key in body}
    assert structure(body, label_maps) == expected
    # The values that identify the answer are the request's, not a template's.
    if "revision_id" in expected:
        assert (body["model_name"], body["revision_id"]) == (model, payload["rev_id"])
        if "wiki_db" in expected:
            assert body["wiki_db"] == "enwiki"


def test_binary_scores_follow_the_emulators_rule(running_emulator: tuple[object, str]) -> None:
    _, base_url = running_emulator
    damaging = post(base_url, "enwiki-damaging", {"rev_id": 42}).json()
    p = emulated_p_true("enwiki-damaging", 42)
    assert damaging == {
        "enwiki": {
            "models": {"damaging": {"version": "0.5.1"}},
            "scores": {
                "42": {
                    "damaging": {
                        "score": {
                            "prediction": p > 0.5,
                            "probability": {"false": round(1 - p, 4), "true": p},
                        }
                    }
                }
            },
        }
    }
    rr = "revertrisk-language-agnostic"
    batch = post(base_url, rr, {"instances": [{"rev_id": r, "lang": "de"} for r in range(1, 21)]})
    expected = []
    for rev in range(1, 21):
        p = emulated_p_true(rr, rev)
        expected.append(
            {
                "model_name": rr,
                "model_version": "3",
                "wiki_db": "dewiki",
                "revision_id": rev,
                "output": {
                    "prediction": p > 0.5,
                    "probabilities": {"true": p, "false": round(1 - p, 4)},
                },
            }
        )
    assert batch.json() == {"predictions": expected}
    # Both predictions occur, so the threshold is tested from both sides.
    assert {e["output"]["prediction"] for e in expected} == {True, False}


def test_batches_follow_lift_wing_rules(running_emulator: tuple[object, str]) -> None:
    _, base_url = running_emulator
    rr = "revertrisk-language-agnostic"
    body = post(
        base_url,
        rr,
        {
            "instances": [
                {"rev_id": 5, "lang": "en"},
                {"rev_id": 2_100_000_000, "lang": "en"},
                {"rev_id": 6, "lang": "en"},
            ]
        },
    ).json()
    documented = orjson.loads(BATCH)
    documented["errors"] = ["Could not make prediction for revision 2 (en). Reason: ..."]
    assert structure(body) == structure(documented)
    assert [p["revision_id"] for p in body["predictions"]] == [5, 6]
    assert body["errors"] == [
        "Could not make prediction for revision 2100000000 (en). Reason: revision not found"
    ]
    mixed = post(
        base_url, rr, {"instances": [{"rev_id": 5, "lang": "en"}, {"rev_id": 6, "lang": "de"}]}
    )
    assert mixed.status_code == 400
    too_many = post(
        base_url, rr, {"instances": [{"rev_id": i, "lang": "en"} for i in range(1, 22)]}
    )
    assert too_many.status_code == 400
    all_failed = post(base_url, rr, {"instances": [{"rev_id": 2_100_000_001, "lang": "en"}] * 2})
    assert all_failed.status_code == 422
    no_batch = post(base_url, "enwiki-damaging", {"instances": [{"rev_id": 1}, {"rev_id": 2}]})
    assert no_batch.status_code == 400


def test_a_batch_of_one_answers_a_list_of_predictions(
    running_emulator: tuple[object, str],
) -> None:
    _, base_url = running_emulator
    body = post(
        base_url,
        "revertrisk-language-agnostic",
        {"instances": [{"rev_id": 123456789, "lang": "en"}]},
    ).json()
    assert structure(body) == structure(orjson.loads(BATCH))


def documented_error(actual: Any, documented: Any) -> bool:
    """Same keys and types; a documented string that ends in "..." is a prefix."""
    if isinstance(documented, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == documented.keys()
            and all(documented_error(actual[k], v) for k, v in documented.items())
        )
    if isinstance(documented, str) and documented.endswith("..."):
        return isinstance(actual, str) and actual.startswith(
            documented.removesuffix("...").rstrip(", ")
        )
    return type(actual) is type(documented) and actual == documented


MISSING = 2_100_000_000  # above the emulator's max_rev_id: an unknown revision
# (case, emulator options, model, payload, status, body from liftwing-api.md section 3)
ERRORS: list[tuple[str, dict[str, Any], str, dict[str, Any], int, dict[str, Any]]] = [
    (
        "unknown revision",
        {},
        "enwiki-damaging",
        {"rev_id": MISSING},
        400,
        {
            "error": "The MW API does not have any info related to the rev-id provided as "
            f"input ({MISSING}), ..."
        },
    ),
    (
        "deleted text",
        {"deleted": frozenset({123})},
        "enwiki-damaging",
        {"rev_id": 123},
        400,
        {"error": "Missing resource for rev-id 123: TextDeleted: Text deleted ..."},
    ),
    (
        "bad payload",
        {},
        "enwiki-damaging",
        {"rev_id": "123"},
        400,
        {"error": 'Expected "rev_id" to be an integer.'},
    ),
    (
        "revertrisk cannot score",
        {},
        "revertrisk-language-agnostic",
        {"rev_id": MISSING, "lang": "en"},
        422,
        {"detail": f"Could not make prediction for revision {MISSING} (en). Reason: ..."},
    ),
    (
        "not deployed",
        {"undeployed": frozenset({"svwiki-reverted"})},
        "svwiki-reverted",
        {"rev_id": 1},
        404,
        {"httpCode": 404, "httpReason": "Not Found"},
    ),
    (
        "unknown model",
        {},
        "not-a-model",
        {"rev_id": 1},
        404,
        {"httpCode": 404, "httpReason": "Not Found"},
    ),
    (
        "MediaWiki API failure",
        {"error_rate": 1.0, "error_statuses": (500,)},
        "enwiki-damaging",
        {"rev_id": 1},
        500,
        {"error": "An error happened while fetching feature values from the MediaWiki API, ..."},
    ),
]


@pytest.mark.parametrize(
    ("options", "model", "payload", "status", "documented"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_errors_answer_the_documented_bodies(
    emulator: EmulatorFactory,
    options: dict[str, Any],
    model: str,
    payload: dict[str, Any],
    status: int,
    documented: dict[str, Any],
) -> None:
    with emulator(**options) as (emu, base_url):
        response = post(base_url, model, payload)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert documented_error(response.json(), documented), response.json()
    assert emu.stats.requests == 1 and emu.stats.by_status == {str(status): 1}


def test_a_language_model_without_lang_is_a_bad_request(emulator: EmulatorFactory) -> None:
    with emulator() as (_, base_url):
        response = post(base_url, "revertrisk-multilingual", {"rev_id": 1})
    assert response.status_code == 400
    assert list(response.json()) == ["detail"]


def test_gateway_budget_answers_429_with_retry_after(emulator: EmulatorFactory) -> None:
    with emulator(budget=Rate(3, 60.0)) as (emu, base_url):
        statuses = [
            post(base_url, "enwiki-damaging", {"rev_id": i}).status_code for i in range(1, 6)
        ]
        limited = post(base_url, "enwiki-damaging", {"rev_id": 9})
    assert statuses == [200, 200, 200, 429, 429]
    # Seconds until the oldest request in the window is 60 s old, rounded up, at the
    # moment the emulator saw the request (its own arrival times, not this test's clock).
    first, last = emu.stats.arrivals[0], emu.stats.arrivals[-1]
    assert int(limited.headers["retry-after"]) == math.ceil(60.0 - (last - first))
    # As the gateway answers (liftwing-api.md section 4): text/plain, not JSON.
    assert limited.headers["content-type"].startswith("text/plain")
    assert emu.stats.by_status == {"200": 3, "429": 3}


def test_token_and_fault_injection(emulator: EmulatorFactory) -> None:
    with emulator(token="t0k", error_rate=1.0, error_statuses=(503,)) as (_, base_url):
        refused = post(base_url, "enwiki-damaging", {"rev_id": 1}, Authorization="Bearer t0")
        assert (refused.status_code, refused.text) == (401, "Unauthorized")
        assert (
            post(base_url, "enwiki-damaging", {"rev_id": 1}, Authorization="Bearer t0k").status_code
            == 503
        )
    with emulator(reset_rate=1.0) as (_, base_url), pytest.raises(httpx.TransportError):
        post(base_url, "enwiki-damaging", {"rev_id": 1})


def test_latency_specs() -> None:
    assert Latency.parse("0.25") == Latency("fixed", 0.25)
    assert Latency.parse("liftwing") == Latency("lognormal", 0.45, 1.03)
    assert Latency.parse("uniform:0.1:0.2") == Latency("uniform", 0.1, 0.2)
    with pytest.raises(UsageError, match="`latency` 'slow'"):
        Latency.parse("slow")
