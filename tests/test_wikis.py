"""Wikis: database names <-> the language values the model servers take, pinned against
what the real servers do (revertrisk and reference-need check the canonical language
code and rewrite the host themselves; articlequality, readability and outlink put the
value in front of .wikipedia.org)."""

from __future__ import annotations

import orjson
import pytest

from lwbatch.protocol.catalog import default_catalog
from lwbatch.protocol.payloads import build_payload
from lwbatch.results import Revision
from lwbatch.wikis import WikiValueError, wikis

# database name -> (language code, host): the pinned table.
MAPPING = {
    "enwiki": ("en", "en"),
    "dewiki": ("de", "de"),
    "simplewiki": ("simple", "simple"),
    "zh_yuewiki": ("yue", "zh-yue"),
    "be_x_oldwiki": ("be-tarask", "be-tarask"),
    "alswiki": ("gsw", "als"),
    "bat_smgwiki": ("sgs", "bat-smg"),
    "fiu_vrowiki": ("vro", "fiu-vro"),
    "roa_rupwiki": ("rup", "roa-rup"),
    "zh_classicalwiki": ("lzh", "zh-classical"),
    "zh_min_nanwiki": ("nan", "zh-min-nan"),
    "nds_nlwiki": ("nds-nl", "nds-nl"),
    "zhwiki": ("zh", "zh"),
}


@pytest.mark.parametrize(("dbname", "forms"), MAPPING.items())
def test_database_names_map_to_the_code_and_host_the_servers_take(
    dbname: str, forms: tuple[str, str]
) -> None:
    wiki = wikis().from_dbname(dbname)
    assert wiki.is_wikipedia and wiki.dbname == dbname
    assert (wiki.lang_for("code"), wiki.lang_for("host")) == forms
    # Every spelling of the language names the same wiki back.
    code, host = forms
    assert wikis().from_lang(code) is wiki
    assert wikis().from_lang(host) is wiki
    assert wikis().from_lang(dbname) is wiki  # a Wikipedia's database name, read as such


def test_the_retired_code_be_x_old_names_be_tarask() -> None:
    assert wikis().from_lang("be-x-old").dbname == "be_x_oldwiki"


@pytest.mark.parametrize(
    ("dbname", "group"),
    [
        ("wikidatawiki", "wikidata"),
        ("commonswiki", "commons"),
        ("eswikibooks", "wikibooks"),
        ("eswikiquote", "wikiquote"),
        ("enwiktionary", "wiktionary"),
    ],
)
def test_other_projects_are_known_and_are_not_wikipedias(dbname: str, group: str) -> None:
    wiki = wikis().from_dbname(dbname)
    assert (wiki.group, wiki.is_wikipedia, wiki.known) == (group, False, True)


def test_an_unknown_well_formed_database_name_is_kept_as_an_unknown_wiki() -> None:
    wiki = wikis().from_dbname("xxyzwiki")
    assert (wiki.dbname, wiki.known, wiki.is_wikipedia, wiki.lang) == ("xxyzwiki", False, False, "")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("EN", "'EN' must be lower case: 'en'"),
        ("ENWIKI", "'ENWIKI' must be lower case: 'en'"),
        ("en-GB", "'en-GB' is a locale; Wikipedias go by language code: 'en'"),
        ("pt_BR", "'pt_BR' is a locale; Wikipedias go by language code: 'pt'"),
        (
            "wikidatawiki",
            "'wikidatawiki' is the database name of a wiki that is not a Wikipedia; "
            "name a column of database names with `wiki_column`",
        ),
        ("xx", "'xx' is not the language code of a Wikipedia"),
        ("be_x_old", "'be_x_old' is not a language code; write 'be-tarask'"),
        ("zh_yue", "'zh_yue' is not a language code; write 'yue'"),
        ("", "is empty"),
    ],
)
def test_a_language_value_that_names_no_wikipedia_says_what_to_write(
    value: str, message: str
) -> None:
    with pytest.raises(WikiValueError) as info:
        wikis().from_lang(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ENWIKI", "'ENWIKI' must be lower case: 'enwiki'"),
        ("en", "'en' is not a database name; this wiki's is 'enwiki'"),
        ("yue", "'yue' is not a database name; this wiki's is 'zh_yuewiki'"),
        ("en.wikipedia.org", "'en.wikipedia.org' is not a database name; this wiki's is 'enwiki'"),
        ("12", "'12' is not a wiki database name such as 'enwiki'"),
        ("zh-yuewiki", "'zh-yuewiki' is not a database name; this wiki's is 'zh_yuewiki'"),
        ("zh_yue", "'zh_yue' is not a database name; this wiki's is 'zh_yuewiki'"),
        ("wikidata", "'wikidata' is not a database name; this wiki's is 'wikidatawiki'"),
        ("  ", "is empty"),
    ],
)
def test_a_database_value_that_names_no_wiki_says_what_to_write(value: str, message: str) -> None:
    with pytest.raises(WikiValueError) as info:
        wikis().from_dbname(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("model", "sent"),
    [
        ("revertrisk-language-agnostic", "yue"),
        ("revertrisk-multilingual", "yue"),
        ("reference-need", "yue"),
        ("reference-risk", "yue"),
        ("articlequality", "zh-yue"),
        ("readability", "zh-yue"),
    ],
)
def test_each_model_is_sent_the_language_value_its_server_reads(model: str, sent: str) -> None:
    spec = default_catalog().resolve(model)
    revision = Revision(77, wikis().from_dbname("zh_yuewiki"), "zh_yuewiki")
    assert orjson.loads(build_payload(spec, [revision])) == {"rev_id": 77, "lang": sent}


def test_outlink_topic_model_is_sent_the_host_the_page_and_the_revision() -> None:
    spec = default_catalog().resolve("outlink-topic-model")
    wiki = wikis().from_dbname("zh_yuewiki")
    revision = Revision(77, wiki, "zh_yuewiki", page_id=5)
    assert orjson.loads(build_payload(spec, [revision])) == {
        "lang": "zh-yue",
        "page_id": 5,
        "revision_id": 77,
    }
    # The page by title where the row has no page_id; never both (the server refuses).
    titled = Revision(77, wiki, "zh_yuewiki", page_title="Hong Kong")
    assert orjson.loads(build_payload(spec, [titled])) == {
        "lang": "zh-yue",
        "page_title": "Hong Kong",
        "revision_id": 77,
    }
    both = Revision(77, wiki, "zh_yuewiki", page_id=5, page_title="Hong Kong")
    assert orjson.loads(build_payload(spec, [both]))["page_id"] == 5
    assert "page_title" not in orjson.loads(build_payload(spec, [both]))


@pytest.mark.parametrize(
    ("model", "dbname", "reason"),
    [
        (
            "revertrisk-language-agnostic",
            "fiu_vrowiki",
            "revertrisk-language-agnostic cannot fetch fiu_vrowiki revisions: it takes the "
            "code 'vro' and fetches vro.wikipedia.org, not fiu-vro.wikipedia.org",
        ),
        (
            "reference-risk",
            "roa_rupwiki",
            "reference-risk cannot fetch roa_rupwiki revisions: it takes the code 'rup' and "
            "fetches rup.wikipedia.org, not roa-rup.wikipedia.org",
        ),
        (
            "articlequality",
            "zh_yuewiki",
            "articlequality cannot score zh_yuewiki: its server looks the wiki up as "
            "'zh_yue' but fetches zh-yue.wikipedia.org",
        ),
        # Outside the server's own list (lwbatch/data/coverage/), read at a commit.
        (
            "articlequality",
            "annwiki",
            "articlequality does not score annwiki: it is not in the server's list (333 wikis "
            "(src/models/articlequality/data/feature_values.tsv at 67a4ca9725, 2024-08-01))",
        ),
        (
            "articlequality",
            "bolwiki",
            "articlequality does not score bolwiki: it is not in the server's list (333 wikis "
            "(src/models/articlequality/data/feature_values.tsv at 67a4ca9725, 2024-08-01))",
        ),
        (
            "revertrisk-multilingual",
            "tokwiki",
            "revertrisk-multilingual does not score tokwiki: it is not in the server's list "
            "(342 wikis (src/models/revert_risk_model/data/wikis.tsv at 8e5412476a, "
            "2025-07-23))",
        ),
        (
            "revertrisk-language-agnostic",
            "aawiki",
            "revertrisk-language-agnostic does not score aawiki: it is closed, and not in the "
            "server's list (342 wikis (src/models/revert_risk_model/data/wikis.tsv at "
            "8e5412476a, 2025-07-23))",
        ),
        # Closed, and in articlequality's feature table: its server scores it.
        ("articlequality", "chowiki", None),
        # No list: any Wikipedia the server can reach.
        ("readability", "annwiki", None),
        ("revertrisk-language-agnostic", "zh_yuewiki", None),  # yue is rewritten to zh-yue
        ("revertrisk-language-agnostic", "alswiki", None),  # gsw is rewritten to als
        ("articlequality", "alswiki", None),  # host als, database name als
        ("readability", "fiu_vrowiki", None),  # host-form: fetches fiu-vro itself
    ],
)
def test_a_model_refuses_the_wikis_its_server_cannot_reach(
    model: str, dbname: str, reason: str | None
) -> None:
    spec = default_catalog().resolve(model)
    assert spec.refuses(wikis().from_dbname(dbname)) == reason


def test_a_catalogue_without_coverage_sends_every_wiki_the_server_can_reach() -> None:
    open_catalog = default_catalog().without_coverage()
    for model, dbname in (("articlequality", "annwiki"), ("revertrisk-multilingual", "aawiki")):
        assert open_catalog.resolve(model).refuses(wikis().from_dbname(dbname)) is None
    # What the server cannot reach stays refused.
    assert open_catalog.resolve("articlequality").refuses(wikis().from_dbname("zh_yuewiki"))
    # The default catalogue is untouched.
    assert default_catalog().resolve("articlequality").refuses(wikis().from_dbname("annwiki"))


# The nine Wikipedias newer than the servers' mid-2025 lists, and the three whose
# canonical code is neither their database name nor their host.
@pytest.mark.parametrize(
    ("dbname", "code", "host"),
    [
        *((f"{c}wiki", c, c) for c in ("bol", "isv", "kai", "kaj", "mag", "nup", "ppl", "rki")),
        ("tokwiki", "tok", "tok"),
        ("zh_yuewiki", "yue", "zh-yue"),
        ("alswiki", "gsw", "als"),
        ("zh_min_nanwiki", "nan", "zh-min-nan"),
    ],
)
def test_the_shipped_list_knows_the_newest_wikipedias(dbname: str, code: str, host: str) -> None:
    wiki = wikis().from_dbname(dbname)
    assert (wiki.is_wikipedia, wiki.open) == (True, True)
    assert (wiki.lang_for("code"), wiki.lang_for("host")) == (code, host)
