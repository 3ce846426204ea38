from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from lwbatch.errors import UnknownModelError, UsageError
from lwbatch.protocol.catalog import Catalog, default_catalog, split_model_names


@pytest.mark.parametrize(
    ("name", "family", "namespace", "needs_lang", "max_batch", "prediction"),
    [
        (
            "enwiki-damaging",
            "revscoring-editquality",
            "revscoring-editquality-damaging",
            False,
            1,
            "bool",
        ),
        (
            "eswiki-goodfaith",
            "revscoring-editquality",
            "revscoring-editquality-goodfaith",
            False,
            1,
            "bool",
        ),
        (
            "fawiki-reverted",
            "revscoring-editquality",
            "revscoring-editquality-reverted",
            False,
            1,
            "bool",
        ),
        (
            "enwiki-articlequality",
            "revscoring-articlequality",
            "revscoring-articlequality",
            False,
            1,
            "string",
        ),
        (
            "enwiki-draftquality",
            "revscoring-draftquality",
            "revscoring-draftquality",
            False,
            1,
            "string",
        ),
        (
            "enwiki-articletopic",
            "revscoring-articletopic",
            "revscoring-articletopic",
            False,
            1,
            "list",
        ),
        ("enwiki-drafttopic", "revscoring-drafttopic", "revscoring-drafttopic", False, 1, "list"),
        (
            "wikidatawiki-itemquality",
            "revscoring-itemquality",
            "revscoring-articlequality",
            False,
            1,
            "string",
        ),
        (
            "wikidatawiki-itemtopic",
            "revscoring-itemtopic",
            "revscoring-articletopic",
            False,
            1,
            "list",
        ),
        (
            "revertrisk-language-agnostic",
            "revertrisk-language-agnostic",
            "revertrisk",
            True,
            20,
            "bool",
        ),
        ("revertrisk-multilingual", "revertrisk-multilingual", "revertrisk", True, 1, "bool"),
        ("revertrisk-wikidata", "revertrisk-wikidata", "revertrisk", False, 1, "bool"),
        ("articlequality", "articlequality", "article-models", True, 1, "double"),
        ("readability", "readability", "readability", True, 1, "double"),
        ("reference-need", "reference-need", "revision-models", True, 1, "double"),
        ("reference-risk", "reference-risk", "revision-models", True, 1, "double"),
    ],
)
def test_every_family_resolves(
    name: str, family: str, namespace: str, needs_lang: bool, max_batch: int, prediction: str
) -> None:
    spec = default_catalog().resolve(name)
    assert spec.family.name == family
    assert spec.namespace == namespace
    assert spec.host == f"{name}.{namespace}.wikimedia.org"
    assert spec.needs_lang is needs_lang
    assert spec.max_batch == max_batch
    assert spec.family.prediction == prediction


def test_revscoring_spec_knows_wiki_and_kind() -> None:
    spec = default_catalog().resolve("zh_yuewiki-damaging")
    assert (spec.wiki, spec.kind) == ("zh_yuewiki", "damaging")


@pytest.mark.parametrize(
    "name",
    [
        "damaging",
        "enwiki-damaging/../x",
        "enwiki-damaging:predict",
        "enwiki-itemquality",
        "revertrisk",
        "enwiki-damaging\r\nHost: evil",
        "",
        "en-damaging",
    ],
)
def test_names_outside_every_family_are_refused(name: str) -> None:
    with pytest.raises(UnknownModelError, match="unknown model"):
        default_catalog().resolve(name)


def test_names_are_matched_as_the_service_writes_them_lowercase() -> None:
    catalog = default_catalog()
    assert catalog.resolve("EnWiki-Damaging").name == "enwiki-damaging"
    assert catalog.resolve("{WIKI}-GoodFaith").name == "{wiki}-goodfaith"
    assert catalog.resolve("Readability").name == "readability"
    # An uppercase name that is no model stays refused, as itself.
    with pytest.raises(UnknownModelError) as info:
        catalog.resolve("EnWiki-Nothing")
    assert info.value.name == "EnWiki-Nothing"


@pytest.mark.parametrize(
    ("name", "close"),
    [
        ("enwiki-damageing", "enwiki-damaging"),
        ("dewiki-goodfaih", "dewiki-goodfaith"),
        ("revertrisk-language-agnostik", "revertrisk-language-agnostic"),
        ("readabilty", "readability"),
        ("damaging", "{wiki}-damaging"),  # ORES named models by kind within a wiki
        ("wikidatawiki-itemqualty", "wikidatawiki-itemquality"),
        ("totally-unrelated", None),
    ],
)
def test_an_unknown_name_says_which_one_was_meant(name: str, close: str | None) -> None:
    with pytest.raises(UnknownModelError) as info:
        default_catalog().resolve(name)
    assert info.value.close == close
    said = str(info.value)
    assert said.startswith(
        f"unknown model {name!r}" + (f" (did you mean {close!r}?)" if close else "") + "; "
    )
    assert "configs/" not in said


def test_lwbatch_models_lists_every_family(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from lwbatch.cli import main

    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == len(default_catalog().families)
    by_names = {r["names"]: r for r in rows}
    assert by_names["WIKI-damaging|goodfaith|reverted"] == {
        "family": "revscoring-editquality",
        "names": "WIKI-damaging|goodfaith|reverted",
        "payload": ["rev_id"],
        "batch": 1,
        "prediction": "bool",
        "probability": True,
        "experimental": False,
        "coverage": None,
    }
    assert by_names["revertrisk-language-agnostic"]["batch"] == 20
    assert by_names["articlequality"]["coverage"] == {
        "name": "articlequality",
        "count": 333,
        "repo": "wikimedia/machinelearning-liftwing-inference-services",
        "path": "src/models/articlequality/data/feature_values.tsv",
        "commit": "67a4ca9725209ee4077511f73261bb059a493ea7",
        "date": "2024-08-01",
    }
    assert by_names["revertrisk-multilingual"]["coverage"]["count"] == 342
    assert by_names["outlink-topic-model"]["payload"] == ["lang", "page_id", "revision_id"]
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split() == ["names", "payload", "batch", "prediction", "wikis"]
    assert (
        "revertrisk-language-agnostic      rev_id, lang                    20  bool        "
        "342 listed" in text
    )
    assert "src/models/articlequality/data/feature_values.tsv at 67a4ca972520 (2024-08-01)" in text
    assert main(["score", "x.parquet", "-o", "y.parquet", "-m", "enwiki-damageing"]) == 2
    assert capsys.readouterr().err.endswith("; `lwbatch models` lists them\n")


def test_lwbatch_models_name_lists_its_wikis(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from lwbatch.cli import main

    assert main(["models", "articlequality", "--json"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    wikis_listed = row["coverage"]["wikis"]
    assert len(wikis_listed) == 333 and "enwiki" in wikis_listed and "annwiki" not in wikis_listed
    assert main(["models", "revertrisk-language-agnostic"]) == 0
    text = capsys.readouterr().out
    assert "abwiki acewiki" in text and " bolwiki " not in text
    assert "8e5412476a2b (2025-07-23)" in text
    assert main(["models", "enwiki-damageing"]) == 2


def test_model_lists_split_on_commas_and_dedupe() -> None:
    names = split_model_names(
        ["enwiki-damaging,enwiki-goodfaith", " readability ", "enwiki-damaging"]
    )
    assert names == ["enwiki-damaging", "enwiki-goodfaith", "readability", "enwiki-damaging"]
    specs = default_catalog().resolve_all(names)
    assert [s.name for s in specs] == ["enwiki-damaging", "enwiki-goodfaith", "readability"]


def test_no_model_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no model given"):
        default_catalog().resolve_all([])


def test_an_experimental_model_is_refused_on_the_public_gateway_only(tmp_path: Path) -> None:
    from lwbatch import Connection, Endpoint, Scorer
    from lwbatch.resources import catalogue_path

    text = catalogue_path().read_text()
    marked = text.replace(
        'name = "readability"\n', 'name = "readability"\nexperimental = true\n', 1
    )
    assert marked != text
    (tmp_path / "models.toml").write_text(marked)
    catalog = Catalog.from_toml(tmp_path / "models.toml")

    async def scorer(models: list[str], **options: Any) -> None:
        # The checks happen when it is built, before any request.
        Scorer(models, connection=Connection(**options))

    with pytest.raises(UsageError) as info:
        anyio.run(partial(scorer, ["readability", "enwiki-damaging"], catalog=catalog))
    assert str(info.value) == (
        "readability: served only in Lift Wing's experimental namespace, which the public "
        "API gateway does not route; use the internal endpoint, or a base URL that reaches "
        "it (`endpoint`)"
    )
    anyio.run(partial(scorer, ["readability"], catalog=catalog, endpoint=Endpoint.internal()))
    local = Endpoint(base_url="http://127.0.0.1:9")
    anyio.run(partial(scorer, ["readability"], catalog=catalog, endpoint=local))
    anyio.run(partial(scorer, ["readability"]))  # the shipped catalogue marks none
