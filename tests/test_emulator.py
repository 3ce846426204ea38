"""The emulator answers like Lift Wing: shapes, errors, gateway budget."""

from __future__ import annotations

import httpx
import orjson
import pytest

from lwbatch.config import Rate
from lwbatch.errors import UsageError
from lwbatch.protocol.answers import parse_answer
from lwbatch.protocol.catalog import default_catalog
from lwbatch.testing.emulator import Latency, unit
from tests.conftest import EmulatorFactory

ALL_FAMILIES = [
    "enwiki-damaging",
    "enwiki-articlequality",
    "wikidatawiki-itemquality",
    "enwiki-draftquality",
    "enwiki-articletopic",
    "wikidatawiki-itemtopic",
    "enwiki-drafttopic",
    "revertrisk-language-agnostic",
    "revertrisk-multilingual",
    "revertrisk-wikidata",
    "articlequality",
    "readability",
    "reference-need",
    "reference-risk",
]


def post(base_url: str, model: str, payload: object, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/models/{model}:predict", content=orjson.dumps(payload), headers=headers
    )


def test_unit_is_deterministic_and_spread() -> None:
    assert unit("enwiki-damaging", 12345) == unit("enwiki-damaging", 12345)
    assert unit("enwiki-damaging", 12345) != unit("enwiki-goodfaith", 12345)
    values = [unit("m", i) for i in range(2000)]
    assert 0.45 < sum(values) / len(values) < 0.55 and min(values) >= 0 and max(values) < 1


@pytest.mark.parametrize("model", ALL_FAMILIES)
def test_every_family_answers_its_real_shape(
    running_emulator: tuple[object, str], model: str
) -> None:
    _, base_url = running_emulator
    spec = default_catalog().resolve(model)
    payload = {"rev_id": 12345, "lang": "en"} if spec.needs_lang else {"rev_id": 12345}
    response = post(base_url, model, payload)
    assert response.status_code == 200
    body = response.json()
    if spec.family.answer == "revscoring":
        assert set(body[spec.wiki]["scores"]["12345"][spec.kind]["score"]) == {
            "prediction",
            "probability",
        }
    else:
        assert body["revision_id"] == 12345 and body["model_name"] == model
    score = parse_answer(spec, [12345], response.content)[12345]
    assert score.ok, score


def test_revscoring_damaging_values(running_emulator: tuple[object, str]) -> None:
    _, base_url = running_emulator
    body = post(base_url, "enwiki-damaging", {"rev_id": 42}).json()
    p = round(unit("enwiki-damaging", 42), 4)
    assert body == {
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


def test_errors_like_lift_wing(emulator: EmulatorFactory) -> None:
    with emulator(deleted=frozenset({77}), undeployed=frozenset({"svwiki-reverted"})) as (
        emu,
        base_url,
    ):
        assert (
            "does not have any info"
            in post(base_url, "enwiki-damaging", {"rev_id": 2_100_000_000}).json()["error"]
        )
        assert "TextDeleted" in post(base_url, "enwiki-damaging", {"rev_id": 77}).json()["error"]
        assert post(base_url, "enwiki-damaging", {"rev_id": "77"}).json() == {
            "error": 'Expected "rev_id" to be an integer.'
        }
        assert post(base_url, "svwiki-reverted", {"rev_id": 1}).status_code == 404
        assert post(base_url, "not-a-model", {"rev_id": 1}).status_code == 404
        assert (
            post(base_url, "revertrisk-multilingual", {"rev_id": 1}).status_code == 400
        )  # lang missing
        assert emu.stats.requests == 6


def test_gateway_budget_answers_429_with_retry_after(emulator: EmulatorFactory) -> None:
    with emulator(budget=Rate(3, 60.0)) as (emu, base_url):
        statuses = [
            post(base_url, "enwiki-damaging", {"rev_id": i}).status_code for i in range(1, 6)
        ]
        limited = post(base_url, "enwiki-damaging", {"rev_id": 9})
    assert statuses == [200, 200, 200, 429, 429]
    assert 58 <= int(limited.headers["retry-after"]) <= 60
    assert emu.stats.by_status == {"200": 3, "429": 3}


def test_token_and_fault_injection(emulator: EmulatorFactory) -> None:
    with emulator(token="t0k", error_rate=1.0, error_statuses=(503,)) as (_, base_url):
        assert post(base_url, "enwiki-damaging", {"rev_id": 1}).status_code == 401
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
