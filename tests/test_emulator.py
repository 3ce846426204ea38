"""The emulator answers like Lift Wing: shapes, errors, gateway budget."""

from __future__ import annotations

import math
from typing import Any

import httpx
import orjson
import pytest

from lwbatch.config import Rate
from lwbatch.errors import UsageError
from lwbatch.testing.answers import unit
from lwbatch.testing.emulator import (
    EmulatorConfig,
    Latency,
    parse_problems,
    parse_unsupported,
    spawned,
)
from tests.conftest import EmulatorFactory, emulated_p_true, emulated_unit


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
OUTLINK = """{"prediction": {"article": "https://en.wikipedia.org/wiki?curid=60520815",
"results": [{"topic": "STEM.Physics", "score": 0.999}]}}"""


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
    "outlink-topic-model": (
        {"lang": "en", "page_id": 60520815, "revision_id": 12345},
        OUTLINK,
        frozenset(),
        True,
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
        p = emulated_p_true(rr, rev, wiki="dewiki")
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
        "Could not make prediction for revision 2100000000 (en). Reason: revision_missing"
    ]
    mixed = post(
        base_url, rr, {"instances": [{"rev_id": 5, "lang": "en"}, {"rev_id": 6, "lang": "de"}]}
    )
    assert (mixed.status_code, mixed.json()) == (
        400,
        {"detail": "Requesting multiple revisions should have the same language."},
    )
    too_many = post(
        base_url, rr, {"instances": [{"rev_id": i, "lang": "en"} for i in range(1, 22)]}
    )
    assert (too_many.status_code, too_many.json()) == (
        400,
        {"detail": "Only accept a maximum of 20 rev_ids in the request."},
    )
    # The server keys revisions by (rev_id, lang) in a dict: a repeated one is one entry.
    all_failed = post(
        base_url,
        rr,
        {
            "instances": [
                {"rev_id": 2_100_000_001, "lang": "en"},
                {"rev_id": 2_100_000_002, "lang": "en"},
                {"rev_id": 2_100_000_001, "lang": "en"},
            ]
        },
    )
    assert (all_failed.status_code, all_failed.json()) == (
        422,
        {
            "detail": "Could not make prediction for revisions dict_keys([(2100000001, 'en'), "
            "(2100000002, 'en')]). Reason: ['revision_missing', 'revision_missing']"
        },
    )
    # A server without batches reads the body as one instance, without a rev_id.
    no_batch = post(base_url, "enwiki-damaging", {"instances": [{"rev_id": 1}, {"rev_id": 2}]})
    assert (no_batch.status_code, no_batch.json()) == (
        400,
        {"error": 'Expected "rev_id" in input data.'},
    )


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
        # The documented single-revision form is multilingual's; the language-agnostic
        # server answers its batch form even to one revision (see MISSING_ANSWERS).
        "revertrisk-multilingual",
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
    assert (response.status_code, response.json()) == (
        400,
        {"error": "The parameter lang is required."},
    )


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


def test_the_gateway_refuses_anonymous_callers_and_wrong_tokens_with_a_challenge(
    emulator: EmulatorFactory,
) -> None:
    with emulator(token="t0k") as (emu, base_url):
        anonymous = post(base_url, "enwiki-damaging", {"rev_id": 1})
        wrong = post(base_url, "enwiki-damaging", {"rev_id": 1}, Authorization="Bearer t0")
        right = post(base_url, "enwiki-damaging", {"rev_id": 1}, Authorization="Bearer t0k")
    # Envoy's jwt_authn filter: the realm is the request's URI; a token that fails
    # verification adds error="invalid_token", a missing one does not.
    uri = f"{base_url}/v1/models/enwiki-damaging:predict"
    assert (anonymous.status_code, anonymous.text) == (401, "Unauthorized")
    assert anonymous.headers["www-authenticate"] == f'Bearer realm="{uri}"'
    assert (wrong.status_code, wrong.text) == (401, "Unauthorized")
    assert wrong.headers["www-authenticate"] == f'Bearer realm="{uri}", error="invalid_token"'
    assert right.status_code == 200
    assert emu.stats.by_model == {"enwiki-damaging": 1}  # 401s never reach a model


def test_emulated_503s_carry_retry_after_only_when_configured(emulator: EmulatorFactory) -> None:
    with emulator(error_rate=1.0, error_statuses=(503,), retry_after_503=7) as (_, base_url):
        paced = post(base_url, "enwiki-damaging", {"rev_id": 1})
    with emulator(error_rate=1.0, error_statuses=(503, 500)) as (_, base_url):
        plain = [post(base_url, "enwiki-damaging", {"rev_id": 1}) for _ in range(8)]
    assert (paced.status_code, paced.headers["retry-after"]) == (503, "7")
    assert {r.status_code for r in plain} == {500, 503}
    assert all("retry-after" not in r.headers for r in plain)
    with emulator(reset_rate=1.0) as (_, base_url), pytest.raises(httpx.TransportError):
        post(base_url, "enwiki-damaging", {"rev_id": 1})


def test_latency_specs() -> None:
    assert Latency.parse("0.25") == Latency("fixed", 0.25)
    assert Latency.parse("liftwing") == Latency("lognormal", 0.45, 1.03)
    assert Latency.parse("uniform:0.1:0.2") == Latency("uniform", 0.1, 0.2)
    with pytest.raises(UsageError, match="`latency` 'slow'"):
        Latency.parse("slow")


# -- per-wiki scores ---------------------------------------------------------------------
# (model, lang as sent, the wiki it names on that server, wiki_db answered, score path)
PER_WIKI: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    (
        "revertrisk-language-agnostic",
        "yue",
        "zh_yuewiki",
        "yuewiki",
        ("output", "probabilities", "true"),
    ),
    ("revertrisk-multilingual", "de", "dewiki", "dewiki", ("output", "probabilities", "true")),
    (
        "revertrisk-multilingual",
        "test",
        "testwiki",
        "testwiki",
        ("output", "probabilities", "true"),
    ),
    ("reference-need", "yue", "zh_yuewiki", "yuewiki", ("reference_need_score",)),
    ("reference-need", "zh-yue", "zh_yuewiki", "zh-yuewiki", ("reference_need_score",)),
    ("reference-risk", "be-x-old", "be_x_oldwiki", "be-x-oldwiki", ("reference_risk_score",)),
    ("articlequality", "de", "dewiki", "dewiki", ("score",)),
    ("readability", "de", "dewiki", "dewiki", ("output", "score")),
]


@pytest.mark.parametrize(
    ("model", "lang", "wiki", "wiki_db", "path"), PER_WIKI, ids=[f"{c[0]}-{c[1]}" for c in PER_WIKI]
)
def test_lang_models_score_per_wiki(
    running_emulator: tuple[object, str],
    model: str,
    lang: str,
    wiki: str,
    wiki_db: str,
    path: tuple[str, ...],
) -> None:
    _, base_url = running_emulator
    here = post(base_url, model, {"rev_id": 12345, "lang": lang}).json()
    english = post(base_url, model, {"rev_id": 12345, "lang": "en"}).json()
    assert (here["wiki_db"], english["wiki_db"]) == (wiki_db, "enwiki")
    for body, named in ((here, wiki), (english, "enwiki")):
        value = body
        for key in path:
            value = value[key]
        assert value == round(emulated_unit(model, 12345, wiki=named), 4)
    # Same revision number, another wiki: another revision, another score.
    assert here != english | {"wiki_db": wiki_db}


def test_readability_and_revscoring_per_wiki_values(running_emulator: tuple[object, str]) -> None:
    _, base_url = running_emulator
    readability = post(base_url, "readability", {"rev_id": 7, "lang": "zh-yue"}).json()
    assert readability == {
        "model_name": "readability",
        "model_version": "3",
        "wiki_db": "zh-yuewiki",
        "revision_id": 7,
        "output": {
            "score": round(emulated_unit("readability", 7, wiki="zh_yuewiki"), 4),
            "fk_score_proxy": round(20 * emulated_unit("readability", 7, 1, wiki="zh_yuewiki"), 2),
        },
    }
    # Revscoring names hold their wiki: the name alone is the key.
    damaging = post(base_url, "dewiki-damaging", {"rev_id": 7}).json()
    p = emulated_p_true("dewiki-damaging", 7)
    assert damaging["dewiki"]["scores"]["7"]["damaging"]["score"]["probability"]["true"] == p


@pytest.mark.parametrize(
    ("model", "wiki"),
    [
        ("eswikibooks-damaging", "eswikibooks"),
        ("eswikiquote-goodfaith", "eswikiquote"),
        ("enwiktionary-reverted", "enwiktionary"),
    ],
)
def test_editquality_models_outside_wikipedia(
    emulator: EmulatorFactory, model: str, wiki: str
) -> None:
    kind = model.split("-")[1]
    with emulator() as (emu, base_url):
        response = post(base_url, model, {"rev_id": 4321})
    p = emulated_p_true(model, 4321)
    assert response.status_code == 200
    assert response.json() == {
        wiki: {
            "models": {kind: {"version": "0.5.1"}},
            "scores": {
                "4321": {
                    kind: {
                        "score": {
                            "prediction": p > 0.5,
                            "probability": {"false": round(1 - p, 4), "true": p},
                        }
                    }
                }
            },
        }
    }
    assert emu.stats.answered == {(model, wiki, 4321): 1}


def test_answers_are_counted_per_model_wiki_and_revision(emulator: EmulatorFactory) -> None:
    rr = "revertrisk-language-agnostic"
    with emulator(deleted=frozenset({9})) as (emu, base_url):
        post(base_url, rr, {"rev_id": 5, "lang": "en"})
        post(base_url, rr, {"rev_id": 5, "lang": "de"})
        post(
            base_url, rr, {"instances": [{"rev_id": 5, "lang": "de"}, {"rev_id": 9, "lang": "de"}]}
        )
        post(base_url, "enwiki-damaging", {"rev_id": 5})
        post(base_url, "enwiki-damaging", {"rev_id": MISSING})  # final: counted
        post(base_url, "revertrisk-wikidata", {"rev_id": 5})
        post(base_url, "articlequality", {"rev_id": 5, "lang": "fr"})
        # 500 KeyError: zh_yuewiki is in the feature table as zh_yue, not zh-yue.
        post(base_url, "articlequality", {"rev_id": 5, "lang": "zh-yue"})
        post(base_url, rr, {"rev_id": 5, "lang": "enwiki"})  # refused before any revision
        post(base_url, "readability", {"rev_id": 5, "lang": "vo"})  # likewise
        stats = emu.stats.to_dict()
    assert emu.stats.answered == {
        (rr, "enwiki", 5): 1,
        (rr, "dewiki", 5): 2,
        (rr, "dewiki", 9): 1,
        ("enwiki-damaging", "enwiki", 5): 1,
        ("enwiki-damaging", "enwiki", MISSING): 1,
        ("revertrisk-wikidata", "wikidatawiki", 5): 1,
        ("articlequality", "frwiki", 5): 1,
    }
    assert (stats["pairs_answered"], stats["pairs_answered_twice"]) == (7, 1)


# -- language checks -----------------------------------------------------------------------
SUFFIX = "Language field should not have a 'wiki' suffix, i.e. use 'en', not 'enwiki'"
FETCH_FAILED = (
    "An error happened while fetching info for revision from the MediaWiki API, "
    "please contact the ML-Team if the issue persists."
)
# (case, emulator options, model, payload, status, body)
LANGUAGE: list[tuple[str, dict[str, Any], str, dict[str, Any], int, dict[str, Any]]] = [
    (
        "revertrisk suffix",
        {},
        "revertrisk-language-agnostic",
        {"rev_id": 1, "lang": "enwiki"},
        400,
        {"detail": SUFFIX},
    ),
    (
        "revertrisk batch suffix",
        {},
        "revertrisk-language-agnostic",
        {"instances": [{"rev_id": 1, "lang": "dewiki"}, {"rev_id": 2, "lang": "dewiki"}]},
        400,
        {"detail": SUFFIX},
    ),
    (
        "multilingual suffix",
        {},
        "revertrisk-multilingual",
        {"rev_id": 1, "lang": "enwiki"},
        400,
        {"detail": SUFFIX},
    ),
    # reference-need/-risk check with kserve's InvalidInput: the same words under "error".
    (
        "reference-need suffix",
        {},
        "reference-need",
        {"rev_id": 1, "lang": "enwiki"},
        400,
        {"error": SUFFIX},
    ),
    (
        "reference-risk suffix",
        {},
        "reference-risk",
        {"rev_id": 1, "lang": "ptwiki"},
        400,
        {"error": SUFFIX},
    ),
    (
        "revertrisk unknown code",
        {},
        "revertrisk-language-agnostic",
        {"rev_id": 1, "lang": "xx"},
        400,
        {"detail": "lang 'xx' does not exist in the canonical Wikipedia language list."},
    ),
    (
        "revertrisk batch unknown code",
        {},
        "revertrisk-language-agnostic",
        {"instances": [{"rev_id": 1, "lang": "xx"}]},
        400,
        {"detail": "lang 'xx' does not exist in the canonical Wikipedia language list."},
    ),
    (
        "multilingual host is no code",
        {},
        "revertrisk-multilingual",
        {"rev_id": 1, "lang": "zh-yue"},
        400,
        {"detail": "lang 'zh-yue' does not exist in the canonical Wikipedia language list."},
    ),
    (
        "reference-need no wiki",
        {},
        "reference-need",
        {"rev_id": 1, "lang": "xx"},
        500,
        {"error": FETCH_FAILED},
    ),
    (
        "readability default unsupported",
        {},
        "readability",
        {"rev_id": 1, "lang": "vo"},
        400,
        {"error": "Unsupported lang: vo."},
    ),
    (
        "readability code is no host",
        {},
        "readability",
        {"rev_id": 1, "lang": "yue"},
        400,
        {"error": "Unsupported lang: yue."},
    ),
    (
        "readability configured unsupported",
        {"unsupported": {"readability": frozenset({"de"})}},
        "readability",
        {"rev_id": 1, "lang": "de"},
        400,
        {"error": "Unsupported lang: de."},
    ),
    (
        "readability without lang",
        {},
        "readability",
        {"rev_id": 1},
        400,
        {"error": "The parameter lang is required."},
    ),
    (
        "articlequality no host",
        {},
        "articlequality",
        {"rev_id": 77, "lang": "xx"},
        500,
        {
            "error": "Failed to get article revision with id: 77. Reason: Cannot connect to host "
            "xx.wikipedia.org:443 ssl:default [Name or service not known]"
        },
    ),
    (
        "articlequality code is no host",
        {},
        "articlequality",
        {"rev_id": 77, "lang": "yue"},
        500,
        {
            "error": "Failed to get article revision with id: 77. Reason: Cannot connect to host "
            "yue.wikipedia.org:443 ssl:default [Name or service not known]"
        },
    ),
    (
        "outlink no host",
        {},
        "outlink-topic-model",
        {"lang": "xx", "page_id": 3, "revision_id": 77},
        500,
        {
            "error": "An unexpected error has occurred while trying to get outlinks from MW API. "
            "Please contact the ML team for more info."
        },
    ),
]


@pytest.mark.parametrize(
    ("options", "model", "payload", "status", "body"),
    [case[1:] for case in LANGUAGE],
    ids=[case[0] for case in LANGUAGE],
)
def test_languages_are_checked_as_each_server_does(
    emulator: EmulatorFactory,
    options: dict[str, Any],
    model: str,
    payload: dict[str, Any],
    status: int,
    body: dict[str, Any],
) -> None:
    with emulator(**options) as (emu, base_url):
        response = post(base_url, model, payload)
    assert (response.status_code, response.json()) == (status, body)
    assert not emu.stats.answered  # about the request, not about a revision


def test_a_language_readability_serves_is_answered(emulator: EmulatorFactory) -> None:
    # Naming readability's languages replaces its default set: vo is served again.
    with emulator(unsupported={"readability": frozenset({"de"})}) as (_, base_url):
        response = post(base_url, "readability", {"rev_id": 1, "lang": "vo"})
    assert response.status_code == 200
    assert response.json()["wiki_db"] == "vowiki"


# -- missing revisions ---------------------------------------------------------------------
GONE = 2_100_000_123  # above max_rev_id
MISSING_ANSWERS: list[tuple[str, str, dict[str, Any], str, int, dict[str, Any]]] = [
    (
        "revertrisk-multilingual",
        "missing",
        {"rev_id": GONE, "lang": "en"},
        "enwiki",
        422,
        {"detail": f"Could not make prediction for revision {GONE} (en). Reason: revision_missing"},
    ),
    # The language-agnostic server is its batch server, also for one revision.
    (
        "revertrisk-language-agnostic",
        "missing",
        {"rev_id": GONE, "lang": "pt"},
        "ptwiki",
        422,
        {
            "detail": f"Could not make prediction for revisions dict_keys([({GONE}, 'pt')]). "
            "Reason: ['revision_missing']"
        },
    ),
    (
        "revertrisk-wikidata",
        "missing",
        {"rev_id": GONE},
        "wikidatawiki",
        500,
        {
            "error": f"Error in preprocess for rev_id {GONE}. Reason: Failed to fetch revision "
            f"content in _get_revision_content for rev_id {GONE}. Reason: 'pages'"
        },
    ),
    (
        "articlequality",
        "missing",
        {"rev_id": GONE, "lang": "en"},
        "enwiki",
        500,
        {
            "error": f"[404] Fetching html failed for the article revision with id: {GONE}. "
            "Reason: Not Found"
        },
    ),
    (
        "articlequality",
        "deleted",
        {"rev_id": 55, "lang": "en"},
        "enwiki",
        500,
        {
            "error": "[403] Fetching html failed for the article revision with id: 55. "
            "Reason: Forbidden"
        },
    ),
    (
        "revertrisk-multilingual",
        "deleted",
        {"rev_id": 55, "lang": "en"},
        "enwiki",
        422,
        {"detail": "Could not make prediction for revision 55 (en). Reason: revision_info_deleted"},
    ),
    (
        "readability",
        "deleted",
        {"rev_id": 55, "lang": "en"},
        "enwiki",
        400,
        {
            "detail": "The necessary features cannot be obtained from the MediaWiki API. "
            "This could be because the data does not exist or has been deleted."
        },
    ),
    (
        "reference-need",
        "missing",
        {"rev_id": GONE, "lang": "pt"},
        "ptwiki",
        400,
        {
            "error": f"Could not make prediction for revision {GONE} (pt). Reason: "
            f"{{'batchcomplete': True, 'query': {{'badrevids': {{'{GONE}': {{'revid': {GONE}, "
            "'missing': True}}}}"
        },
    ),
    (
        "reference-risk",
        "deleted",
        {"rev_id": 55, "lang": "pt"},
        "ptwiki",
        400,
        {
            "error": "Could not make prediction for revision 55 (pt). Reason: "
            "{'batchcomplete': True, 'query': {'pages': {'9': {'pageid': 9, 'revisions': "
            "[{'revid': 55, 'texthidden': True}]}}}}"
        },
    ),
    (
        "outlink-topic-model",
        "missing",
        {"lang": "fr", "page_id": 3, "revision_id": GONE},
        "frwiki",
        400,
        {
            "detail": f"Cannot fetch revision {GONE} on fr.wikipedia.org: "
            "MediaWiki API error 'nosuchrevid'."
        },
    ),
    (
        "outlink-topic-model",
        "deleted",
        {"lang": "fr", "page_id": 3, "revision_id": 55},
        "frwiki",
        400,
        {
            "detail": "Cannot fetch revision 55 on fr.wikipedia.org: "
            "MediaWiki API error 'permissiondenied'."
        },
    ),
    (
        "enwiki-damaging",
        "deleted",
        {"rev_id": 55},
        "enwiki",
        400,
        {
            "error": "Missing resource for rev-id 55: TextDeleted: "
            "Text deleted (datasource.revision.text)"
        },
    ),
    (
        "enwiki-damaging",
        "missing",
        {"rev_id": GONE},
        "enwiki",
        400,
        {
            "error": "The MW API does not have any info related to the rev-id provided as input "
            f"({GONE}), therefore it is not possible to extract features properly. One possible "
            "cause is the deletion of the page related to the revision id. Please contact the "
            "ML-Team if you need more info."
        },
    ),
]


@pytest.mark.parametrize(
    ("model", "kind", "payload", "wiki", "status", "body"),
    MISSING_ANSWERS,
    ids=[f"{c[0]}-{c[1]}" for c in MISSING_ANSWERS],
)
def test_missing_revisions_are_answered_as_each_server_does(
    emulator: EmulatorFactory,
    model: str,
    kind: str,
    payload: dict[str, Any],
    wiki: str,
    status: int,
    body: dict[str, Any],
) -> None:
    with emulator(deleted=frozenset({55})) as (emu, base_url):
        response = post(base_url, model, payload)
    assert (response.status_code, response.json()) == (status, body)
    rev_id = payload.get("rev_id", payload.get("revision_id"))
    assert emu.stats.answered == {(model, wiki, rev_id): 1}  # a final answer


# -- outlink-topic-model -------------------------------------------------------------------
OUTLINK_LABELS = [  # configs/models.toml, family outlink-topic-model
    "Culture.Biography.Biography*",
    "Culture.Media.Media*",
    "Geography.Regions.Europe.Europe*",
    "History and Society.Politics and government",
    "STEM.STEM*",
    "STEM.Physics",
]


def outlink_results(wiki: str, revision_id: int, threshold: float) -> list[dict[str, Any]]:
    scored = [
        (label, round(emulated_unit("outlink-topic-model", revision_id, i + 1, wiki=wiki), 4))
        for i, label in enumerate(OUTLINK_LABELS)
    ]
    ranked = sorted(scored, key=lambda pair: -pair[1])
    return [{"topic": t, "score": s} for t, s in ranked if s >= threshold]


def test_outlink_answers_topics_above_the_threshold(running_emulator: tuple[object, str]) -> None:
    _, base_url = running_emulator
    model = "outlink-topic-model"
    page = {"lang": "zh-yue", "page_id": 60520815, "revision_id": 12345}
    body = post(base_url, model, page).json()
    assert body == {
        "prediction": {
            "article": "https://zh-yue.wikipedia.org/wiki?curid=60520815",
            "results": outlink_results("zh_yuewiki", 12345, 0.5),
        }
    }
    everything = post(base_url, model, {**page, "threshold": 0.0}).json()
    results = everything["prediction"]["results"]
    assert results == outlink_results("zh_yuewiki", 12345, 0.0)
    assert len(results) == len(OUTLINK_LABELS)
    assert 0 < len(body["prediction"]["results"]) < len(results)  # the threshold cuts
    english = post(base_url, model, {**page, "lang": "en"}).json()
    assert english["prediction"]["results"] == outlink_results("enwiki", 12345, 0.5)
    assert english["prediction"]["results"] != body["prediction"]["results"]


@pytest.mark.parametrize(
    ("payload", "body"),
    [
        (
            {"lang": "en", "revision_id": 1},
            {"error": "You must pass either `page_title` or `page_id`."},
        ),
        (
            {"lang": "en", "page_id": 3, "page_title": "Foo", "revision_id": 1},
            {
                "error": "Detected both `page_title` and `page_id` in the request. "
                "Please pass only one of those."
            },
        ),
        ({"page_id": 3, "revision_id": 1}, {"error": 'Missing "lang" in input data.'}),
        (
            {"lang": "en", "page_id": 3, "revision_id": 1, "threshold": 1},
            {"error": 'Expected "threshold" to be a float'},
        ),
    ],
    ids=["no page", "page twice", "no lang", "integer threshold"],
)
def test_outlink_refuses_what_its_server_refuses(
    running_emulator: tuple[object, str], payload: dict[str, Any], body: dict[str, Any]
) -> None:
    _, base_url = running_emulator
    response = post(base_url, "outlink-topic-model", payload)
    assert (response.status_code, response.json()) == (400, body)


# -- the command line ----------------------------------------------------------------------
def test_unsupported_languages_parse_and_validate() -> None:
    assert parse_unsupported([]) == {"readability": frozenset({"vo"})}
    assert parse_unsupported(["readability:vo, yue"]) == {"readability": frozenset({"vo", "yue"})}
    assert parse_unsupported(["readability:"]) == {"readability": frozenset()}
    with pytest.raises(UsageError, match="write MODEL:LANG,LANG"):
        parse_unsupported(["vo,yue"])
    with pytest.raises(UsageError, match="`unsupported` names articlequality: "):
        EmulatorConfig(unsupported=parse_unsupported(["articlequality:vo"]))


def test_reference_need_refuses_a_language_it_does_not_serve(emulator: EmulatorFactory) -> None:
    unsupported = {"reference-need": frozenset({"pt"})}
    with emulator(unsupported=unsupported) as (emu, base_url):
        refused = post(base_url, "reference-need", {"rev_id": 1, "lang": "pt"})
        served = post(base_url, "reference-need", {"rev_id": 1, "lang": "de"})
        other = post(base_url, "reference-risk", {"rev_id": 1, "lang": "pt"})
    assert (refused.status_code, refused.json()) == (400, {"error": "Unsupported lang: pt."})
    assert (served.status_code, other.status_code) == (200, 200)


def test_emulate_takes_unsupported_languages_and_503_pacing() -> None:
    options = ["--unsupported", "readability:de", "--retry-after-503", "9", "--error-rate", "1"]
    with spawned(*options) as base_url:
        refused = post(base_url, "readability", {"rev_id": 1, "lang": "de"})
        # Refused before any fault is rolled; then every request is a 5xx (seeded).
        faults = [post(base_url, "enwiki-damaging", {"rev_id": 1}) for _ in range(12)]
    assert (refused.status_code, refused.json()) == (400, {"error": "Unsupported lang: de."})
    unavailable = [r for r in faults if r.status_code == 503]
    assert unavailable and all(r.headers["retry-after"] == "9" for r in unavailable)


# -- revisions with other problems (the servers' newest answers) --------------------------
FETCH_FAILURE = (
    "An error happened while fetching info for revision from the MediaWiki API, please "
    "contact the ML-Team if the issue persists."
)
# (model, problem of revision 55, payload, status, body, a final answer?)
PROBLEM_ANSWERS: list[tuple[str, str, dict[str, Any], int, dict[str, Any], bool]] = [
    (
        "enwiki-damaging",
        "parent_missing",
        {"rev_id": 55},
        400,
        {
            "error": "Missing resource for rev-id 55: RevisionNotFound: Could not find revision "
            "({revision.parent}:54)"
        },
        True,
    ),
    (
        "enwiki-goodfaith",
        "hidden_user",
        {"rev_id": 55},
        400,
        {"error": "Missing resource for rev-id 55: UserDeleted: User deleted ({revision.user})"},
        True,
    ),
    (
        "wikidatawiki-itemquality",
        "not_wikitext",
        {"rev_id": 55},
        400,
        {
            "error": "Unexpected content type for rev-id 55: UnexpectedContentType: Expected "
            "content of type JSON, but the following can't be parsed (max 50 chars showed): "
            "{{Infobox person"
        },
        True,
    ),
    (
        "enwiki-damaging",
        "generic",
        {"rev_id": 55},
        400,
        {
            "error": "Generic error while extracting features for rev-id 55: "
            "ConnectionResetError: [Errno 104] Connection reset by peer"
        },
        False,
    ),
    (
        "revertrisk-multilingual",
        "parent_missing",
        {"rev_id": 55, "lang": "en"},
        422,
        {
            "detail": "Could not make prediction for revision 55 (en). "
            "Reason: parent_revision_missing"
        },
        True,
    ),
    (
        "revertrisk-multilingual",
        "poison",
        {"rev_id": 55, "lang": "en"},
        500,
        {"error": FETCH_FAILURE},
        False,
    ),
    (
        "revertrisk-wikidata",
        "parent_missing",
        {"rev_id": 55},
        500,
        {
            "error": "Error in preprocess for rev_id 55. Reason: Failed to fetch revision content "
            "in _get_revision_content for rev_id 54. Reason: 'pages'"
        },
        True,
    ),
    (
        "revertrisk-wikidata",
        "hidden_user",
        {"rev_id": 55},
        500,
        {
            "error": "Error in preprocess for rev_id 55. Reason: Failed to fetch metadata features "
            "in _fetch_metadata_features for rev_id 55. Reason: 'user'"
        },
        True,
    ),
    (
        "articlequality",
        "empty",
        {"rev_id": 55, "lang": "en"},
        500,
        {"error": "Article with language en and revid 55 has errors when preprocessing"},
        True,
    ),
    (
        "reference-need",
        "parent_missing",
        {"rev_id": 55, "lang": "pt"},
        400,
        {
            "error": "Could not make prediction for revision 55 (pt). Reason: {'batchcomplete': "
            "True, 'query': {'badrevids': {'54': {'revid': 54, 'missing': True}}}}"
        },
        True,
    ),
    # Servers that do not notice a problem score the revision.
    ("readability", "parent_missing", {"rev_id": 55, "lang": "en"}, 200, {}, True),
    ("enwiki-damaging", "empty", {"rev_id": 55}, 200, {}, True),
]


@pytest.mark.parametrize(
    ("model", "problem", "payload", "status", "body", "final"),
    PROBLEM_ANSWERS,
    ids=[f"{c[0]}-{c[1]}" for c in PROBLEM_ANSWERS],
)
def test_problems_are_answered_as_each_server_does(
    emulator: EmulatorFactory,
    model: str,
    problem: str,
    payload: dict[str, Any],
    status: int,
    body: dict[str, Any],
    final: bool,
) -> None:
    with emulator(problems={55: problem}) as (emu, base_url):
        response = post(base_url, model, payload)
    assert response.status_code == status
    if status != 200:
        assert response.json() == body
    assert len(emu.stats.answered) == (1 if final else 0)


def test_a_poison_revision_fails_its_whole_batch(emulator: EmulatorFactory) -> None:
    rr = "revertrisk-language-agnostic"
    batch = {"instances": [{"rev_id": r, "lang": "en"} for r in (1, 2, 55, 3)]}
    with emulator(problems={55: "poison", 2: "deleted", 3: "parent_missing"}) as (emu, url):
        poisoned = post(url, rr, batch)
        assert (poisoned.status_code, poisoned.json()) == (500, {"error": FETCH_FAILURE})
        assert not emu.stats.answered
        batch["instances"].pop(2)
        answered = post(url, rr, batch).json()
    assert [p["revision_id"] for p in answered["predictions"]] == [1]
    assert answered["errors"] == [
        "Could not make prediction for revision 2 (en). Reason: revision_info_deleted",
        "Could not make prediction for revision 3 (en). Reason: parent_revision_missing",
    ]


def test_articlequality_answers_keyerror_for_a_wiki_outside_its_feature_table(
    emulator: EmulatorFactory,
) -> None:
    # annwiki and bolwiki are open Wikipedias its feature table lacks; zh_yuewiki is in
    # it as "zh_yue", while the host it fetches, and so the key it reads, is "zh-yue".
    with emulator() as (emu, base_url):
        for lang in ("ann", "bol", "zh-yue"):
            response = post(base_url, "articlequality", {"rev_id": 1, "lang": lang})
            assert (response.status_code, response.json()) == (
                500,
                {"error": f"KeyError : '{lang}'"},
            )
        assert not emu.stats.answered
        assert post(base_url, "articlequality", {"rev_id": 1, "lang": "ab"}).status_code == 200


def test_revertrisk_refuses_wikipedias_newer_than_its_list(emulator: EmulatorFactory) -> None:
    # lwbatch's wiki list knows bolwiki; revertrisk's own copy (July 2025) does not.
    with emulator() as (_, base_url):
        response = post(base_url, "revertrisk-multilingual", {"rev_id": 1, "lang": "bol"})
        assert (response.status_code, response.json()) == (
            400,
            {"detail": "lang 'bol' does not exist in the canonical Wikipedia language list."},
        )
        closed = post(base_url, "revertrisk-multilingual", {"rev_id": 1, "lang": "aa"})
        assert closed.status_code == 400


def test_a_model_of_a_wiki_that_does_not_exist_is_not_found(emulator: EmulatorFactory) -> None:
    with emulator() as (emu, base_url):
        response = post(base_url, "xxwiki-damaging", {"rev_id": 1})
        assert (response.status_code, response.json()) == (
            404,
            {"httpCode": 404, "httpReason": "Not Found"},
        )
        assert post(base_url, "eswikibooks-damaging", {"rev_id": 1}).status_code == 200
    assert dict(emu.stats.by_status) == {"404": 1, "200": 1}


def test_problem_options_are_checked() -> None:
    assert parse_problems(["poison:1,2", "deleted:3"]) == {1: "poison", 2: "poison", 3: "deleted"}
    for bad in ("poison", "rotten:1", "poison:x", "poison:"):
        with pytest.raises(UsageError, match="`problem`"):
            parse_problems([bad])
