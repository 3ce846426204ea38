"""Real Lift Wing bodies, replayed.

The 2xx bodies are verbatim from /work/shared/liftwing-api.md section 3c (the
inference-services API docs and a client's fixtures). The error bodies are the
messages the model servers build (inference-services, read from source), as kserve
and FastAPI send them: `InvalidInput` -> 400 {"error": ...}, `InferenceError` -> 500
{"error": ...}, `HTTPException` -> {"detail": ...}. Every expected Score is written
out by hand.
"""

from __future__ import annotations

import random

import httpx
import orjson
import pytest

from lwbatch import Budget, Endpoint, RetryPolicy
from lwbatch.engine.dispatch import Dispatcher
from lwbatch.engine.stats import RunStats
from lwbatch.pacing.limiter import BudgetLimiter
from lwbatch.protocol.answers import parse_answer
from lwbatch.protocol.catalog import default_catalog
from lwbatch.protocol.client import LiftWingClient
from lwbatch.results import ErrorType, Revision, Score
from tests.conftest import FakeClock, Script

BASE = "http://127.0.0.1:9"


def spec(name: str):  # type: ignore[no-untyped-def]
    return default_catalog().resolve(name)


# -- 200 answers ---------------------------------------------------------------------
DAMAGING = (
    b'{"enwiki":{"models":{"damaging":{"version":"0.5.1"}},"scores":{"1097728152":{"damaging":'
    b'{"score":{"prediction":false,"probability":{"false":0.5818192554457859,'
    b'"true":0.4181807445542141}}}}}}}'
)
REVERTRISK_BATCH = (
    b'{"predictions":[{"model_name":"revertrisk-language-agnostic","model_version":"v1",'
    b'"wiki_db":"enwiki","revision_id":123456789,"output":{"prediction":false,'
    b'"probabilities":{"true":0.3403553068637848,"false":0.6596446931362152}}}]}'
)
ITEMTOPIC = (
    b'{"wikidatawiki":{"models":{"itemtopic":{"version":"1.2.0"}},"scores":{"12345":'
    b'{"itemtopic":{"score":{"prediction":["STEM.STEM*"],"probability":'
    b'{"Culture.Biography.Biography*":0.0037221493203970753}}}}}}}'
)
READABILITY = (
    b'{"model_name":"readability","model_version":"v1","wiki_db":"enwiki",'
    b'"revision_id":123456789,"output":{"score":0.6433582305908203,'
    b'"fk_score_proxy":9.397851597845303}}'
)
REFERENCE_NEED_ERROR = (
    b'{"error": "Could not make prediction for revision 143077740 (pt). Reason: revision_missing"}'
)


def test_damaging() -> None:
    assert parse_answer(spec("enwiki-damaging"), [1097728152], DAMAGING) == {
        1097728152: Score(
            prediction=False,
            probability={"false": 0.5818192554457859, "true": 0.4181807445542141},
            model_version="0.5.1",
            error=None,
            error_message=None,
        )
    }


def test_revertrisk_batch() -> None:
    assert parse_answer(spec("revertrisk-language-agnostic"), [123456789], REVERTRISK_BATCH) == {
        123456789: Score(
            prediction=False,
            probability={"true": 0.3403553068637848, "false": 0.6596446931362152},
            model_version="v1",
            error=None,
            error_message=None,
        )
    }


def test_revertrisk_batch_with_errors() -> None:
    # As batch_model.py answers when some items fail: the successes in `predictions`,
    # one sentence per failure in `errors`, still HTTP 200.
    raw = (
        b'{"predictions":[{"model_name":"revertrisk-language-agnostic","model_version":"v1",'
        b'"wiki_db":"enwiki","revision_id":123456789,"output":{"prediction":false,'
        b'"probabilities":{"true":0.3403553068637848,"false":0.6596446931362152}}}],'
        b'"errors":["Could not make prediction for revision 123456790 (en). '
        b'Reason: revision_missing","Could not make prediction for revision 123456791 (en). '
        b'Reason: parent_revision_missing","Could not make prediction for revision 123456792 '
        b'(en). Reason: other_reason"]}'
    )
    revs = [123456792, 123456791, 123456790, 123456789]
    assert parse_answer(spec("revertrisk-language-agnostic"), revs, raw) == {
        123456789: Score(
            prediction=False,
            probability={"true": 0.3403553068637848, "false": 0.6596446931362152},
            model_version="v1",
            error=None,
            error_message=None,
        ),
        123456790: Score(
            prediction=None,
            probability=None,
            model_version=None,
            error=ErrorType.NOT_FOUND,
            error_message="Could not make prediction for revision 123456790 (en). "
            "Reason: revision_missing",
        ),
        123456791: Score(
            prediction=None,
            probability=None,
            model_version=None,
            error=ErrorType.UNSCORABLE,
            error_message="parent revision missing: "
            "Could not make prediction for revision 123456791 (en). "
            "Reason: parent_revision_missing",
        ),
        123456792: Score(
            prediction=None,
            probability=None,
            model_version=None,
            error=ErrorType.UNSCORABLE,
            error_message="Could not make prediction for revision 123456792 (en). "
            "Reason: other_reason",
        ),
    }


def test_itemtopic() -> None:
    assert parse_answer(spec("wikidatawiki-itemtopic"), [12345], ITEMTOPIC) == {
        12345: Score(
            prediction=["STEM.STEM*"],
            probability={"Culture.Biography.Biography*": 0.0037221493203970753},
            model_version="1.2.0",
            error=None,
            error_message=None,
        )
    }


def test_outlink_topic_model() -> None:
    # The shape of liftwing-api.md section 2 and the server's postprocess(): topics at or
    # above the threshold, best first; no model version in the answer.
    raw = (
        b'{"prediction":{"article":"https://en.wikipedia.org/wiki?curid=60520815",'
        b'"results":[{"topic":"STEM.Physics","score":0.999},'
        b'{"topic":"Culture.Biography.Biography*","score":0.5}]}}'
    )
    assert parse_answer(spec("outlink-topic-model"), [123], raw) == {
        123: Score(
            prediction=["STEM.Physics", "Culture.Biography.Biography*"],
            probability={"STEM.Physics": 0.999, "Culture.Biography.Biography*": 0.5},
            model_version=None,
            error=None,
            error_message=None,
        )
    }
    broken = b'{"prediction":{"article":"x","results":{"topic":"STEM.Physics"}}}'
    [score] = parse_answer(spec("outlink-topic-model"), [123], broken).values()
    assert score.error is ErrorType.BAD_RESPONSE


def test_readability() -> None:
    assert parse_answer(spec("readability"), [123456789], READABILITY) == {
        123456789: Score(
            prediction=0.6433582305908203,
            probability=None,
            model_version="v1",
            error=None,
            error_message=None,
        )
    }


# -- through the dispatcher ------------------------------------------------------------
class Replay:
    """A dispatcher whose every request gets the same answer; backoffs are recorded."""

    def __init__(self, clock: FakeClock, status: int, raw: bytes) -> None:
        self.script = Script(
            lambda r, n: httpx.Response(
                status, content=raw, headers={"Content-Type": "application/json"}
            ),
            clock,
        )
        self.client = LiftWingClient(
            Endpoint(base_url=BASE), transport=self.script.transport, clock=clock
        )
        self.limiter = BudgetLimiter(Budget.unlimited(), clock=clock, sleep=clock.sleep)
        self.backoffs: list[float] = []
        self.clock = clock
        self.dispatcher = Dispatcher(
            self.client,
            self.limiter,
            retry=RetryPolicy(max_attempts=3),
            sleep=self.sleep,
            rng=random.Random(5),
        )

    async def sleep(self, seconds: float) -> None:
        self.backoffs.append(seconds)
        await self.clock.sleep(seconds)

    async def send(self, model: str, revisions: list[Revision]) -> list[Score]:
        async with self.client:
            return await self.dispatcher.send(spec(model), revisions, RunStats())


def error(key: str, message: str) -> bytes:
    return orjson.dumps({key: message})


# (model, status, body, error type, the message the score keeps)
FINAL = [
    pytest.param(
        "revertrisk-wikidata",
        500,
        error(
            "error",
            "Error in preprocess for rev_id 2000000001. Reason: Failed to fetch revision "
            "content in _get_revision_content for rev_id 2000000001. Reason: 'pages'",
        ),
        ErrorType.NOT_FOUND,
        "Error in preprocess for rev_id 2000000001. Reason: Failed to fetch revision "
        "content in _get_revision_content for rev_id 2000000001. Reason: 'pages'",
        id="revertrisk-wikidata-500-pages",
    ),
    pytest.param(
        "articlequality",
        500,
        error(
            "error",
            "Fetching html failed for the article revision with id: 2000000001. Reason: Not Found",
        ),
        ErrorType.NOT_FOUND,
        "Fetching html failed for the article revision with id: 2000000001. Reason: Not Found",
        id="articlequality-500-not-found-unprefixed",
    ),
    pytest.param(
        "articlequality",
        500,
        error(
            "error",
            "[404] Fetching html failed for the article revision with id: 7. Reason: Not Found",
        ),
        ErrorType.NOT_FOUND,
        "[404] Fetching html failed for the article revision with id: 7. Reason: Not Found",
        id="articlequality-500-upstream-404",
    ),
    pytest.param(
        "articlequality",
        500,
        error(
            "error",
            "[403] Fetching html failed for the article revision with id: 7. Reason: Forbidden",
        ),
        ErrorType.DELETED,
        "[403] Fetching html failed for the article revision with id: 7. Reason: Forbidden",
        id="articlequality-500-upstream-403",
    ),
    pytest.param(
        "articlequality",
        500,
        error(
            "error",
            "[400] Fetching html failed for the article revision with id: 7. Reason: Bad Request",
        ),
        ErrorType.UNSCORABLE,
        "[400] Fetching html failed for the article revision with id: 7. Reason: Bad Request",
        id="articlequality-500-upstream-400",
    ),
    pytest.param(
        "articlequality",
        500,
        error("error", "Article with language en and revid 7 has errors when preprocessing"),
        ErrorType.UNSCORABLE,
        "Article with language en and revid 7 has errors when preprocessing",
        id="articlequality-500-empty-article",
    ),
    pytest.param(
        "revertrisk-wikidata",
        500,
        error(
            "error",
            "Error in preprocess for rev_id 7. Reason: Failed to fetch revision content in "
            "_get_revision_content for rev_id 6. Reason: 'pages'",
        ),
        ErrorType.UNSCORABLE,
        "parent revision 6 not found: Error in preprocess for rev_id 7. Reason: Failed to "
        "fetch revision content in _get_revision_content for rev_id 6. Reason: 'pages'",
        id="revertrisk-wikidata-500-parent-pages",
    ),
    pytest.param(
        "revertrisk-wikidata",
        500,
        error(
            "error",
            "Error in preprocess for rev_id 7. Reason: Failed to fetch metadata features in "
            "_fetch_metadata_features for rev_id 7. Reason: 'user'",
        ),
        ErrorType.UNSCORABLE,
        "Error in preprocess for rev_id 7. Reason: Failed to fetch metadata features in "
        "_fetch_metadata_features for rev_id 7. Reason: 'user'",
        id="revertrisk-wikidata-500-hidden-user",
    ),
    pytest.param(
        "readability",
        400,
        error("error", "Unsupported lang: xx."),
        ErrorType.UNSUPPORTED_WIKI,
        "Unsupported lang: xx.",
        id="readability-400-unsupported-lang",
    ),
    pytest.param(
        "revertrisk-language-agnostic",
        400,
        error("detail", "lang 'xx' does not exist in the canonical Wikipedia language list."),
        ErrorType.UNSUPPORTED_WIKI,
        "lang 'xx' does not exist in the canonical Wikipedia language list.",
        id="revertrisk-400-not-canonical",
    ),
    pytest.param(
        "readability",
        400,
        error(
            "detail",
            "The necessary features cannot be obtained from the MediaWiki API. This could be "
            "because the data does not exist or has been deleted.",
        ),
        ErrorType.NOT_FOUND,
        "The necessary features cannot be obtained from the MediaWiki API. This could be "
        "because the data does not exist or has been deleted.",
        id="readability-400-no-features",
    ),
    pytest.param(
        "reference-need",
        400,
        REFERENCE_NEED_ERROR,
        ErrorType.NOT_FOUND,
        "Could not make prediction for revision 143077740 (pt). Reason: revision_missing",
        id="reference-need-400-revision-missing",
    ),
    pytest.param(
        "reference-risk",
        400,
        error(
            "error",
            "Could not make prediction for revision 41642294 (pt). Reason: parent_revision_missing",
        ),
        ErrorType.UNSCORABLE,
        "parent revision missing: "
        "Could not make prediction for revision 41642294 (pt). Reason: parent_revision_missing",
        id="reference-risk-400-parent-missing",
    ),
    pytest.param(
        "reference-need",
        400,
        error(
            "error",
            "Could not make prediction for revision 7 (pt). Reason: {'batchcomplete': True, "
            "'query': {'badrevids': {'7': {'revid': 7, 'missing': True}}}}",
        ),
        ErrorType.NOT_FOUND,
        "Could not make prediction for revision 7 (pt). Reason: {'batchcomplete': True, "
        "'query': {'badrevids': {'7': {'revid': 7, 'missing': True}}}}",
        id="reference-need-400-mediawiki-badrevids",
    ),
    pytest.param(
        "reference-risk",
        400,
        error(
            "error",
            "Could not make prediction for revision 7 (pt). Reason: {'batchcomplete': True, "
            "'query': {'pages': {'9': {'pageid': 9, 'revisions': [{'revid': 7, "
            "'texthidden': True}]}}}}",
        ),
        ErrorType.DELETED,
        "Could not make prediction for revision 7 (pt). Reason: {'batchcomplete': True, "
        "'query': {'pages': {'9': {'pageid': 9, 'revisions': [{'revid': 7, "
        "'texthidden': True}]}}}}",
        id="reference-risk-400-mediawiki-texthidden",
    ),
    pytest.param(
        "revertrisk-language-agnostic",
        422,
        error("detail", "Could not make prediction for revision 7 (en). Reason: revision_missing"),
        ErrorType.NOT_FOUND,
        "Could not make prediction for revision 7 (en). Reason: revision_missing",
        id="revertrisk-422-revision-missing",
    ),
    pytest.param(
        "revertrisk-multilingual",
        422,
        error(
            "detail",
            "Could not make prediction for revision 7 (en). Reason: parent_revision_missing",
        ),
        ErrorType.UNSCORABLE,
        "parent revision missing: "
        "Could not make prediction for revision 7 (en). Reason: parent_revision_missing",
        id="revertrisk-422-parent-missing",
    ),
    pytest.param(
        "revertrisk-language-agnostic",
        422,
        error(
            "detail",
            "Could not make prediction for revision 7 (en). Reason: revision_info_deleted",
        ),
        ErrorType.DELETED,
        "Could not make prediction for revision 7 (en). Reason: revision_info_deleted",
        id="revertrisk-422-revision-info-deleted",
    ),
    pytest.param(
        "revertrisk-language-agnostic",
        422,
        error("detail", "Could not make prediction for revision 7 (en). Reason: other_reason"),
        ErrorType.UNSCORABLE,
        "Could not make prediction for revision 7 (en). Reason: other_reason",
        id="revertrisk-422-other-reason",
    ),
    pytest.param(
        "outlink-topic-model",
        400,
        error(
            "detail",
            "Cannot fetch revision 7 on en.wikipedia.org: MediaWiki API error 'nosuchrevid'.",
        ),
        ErrorType.NOT_FOUND,
        "Cannot fetch revision 7 on en.wikipedia.org: MediaWiki API error 'nosuchrevid'.",
        id="outlink-400-nosuchrevid",
    ),
    pytest.param(
        "outlink-topic-model",
        400,
        error(
            "detail",
            "Cannot fetch revision 7 on en.wikipedia.org: MediaWiki API error 'permissiondenied'.",
        ),
        ErrorType.DELETED,
        "Cannot fetch revision 7 on en.wikipedia.org: MediaWiki API error 'permissiondenied'.",
        id="outlink-400-permissiondenied",
    ),
    pytest.param(
        "enwiki-damaging",
        400,
        error(
            "error",
            "Missing resource for rev-id 7: TextDeleted: Text deleted (datasource.revision.text)",
        ),
        ErrorType.DELETED,
        "Missing resource for rev-id 7: TextDeleted: Text deleted (datasource.revision.text)",
        id="revscoring-400-text-deleted",
    ),
    pytest.param(
        "enwiki-damaging",
        400,
        error(
            "error",
            "Missing resource for rev-id 7: TextDeleted: Text deleted "
            "(datasource.revision.parent.text)",
        ),
        ErrorType.UNSCORABLE,
        "parent revision deleted: Missing resource for rev-id 7: TextDeleted: Text deleted "
        "(datasource.revision.parent.text)",
        id="revscoring-400-parent-text-deleted",
    ),
    pytest.param(
        "enwiki-goodfaith",
        400,
        error(
            "error",
            "Missing resource for rev-id 7: RevisionNotFound: Could not find revision "
            "({revision.parent}:6)",
        ),
        ErrorType.UNSCORABLE,
        "parent revision 6 not found: Missing resource for rev-id 7: RevisionNotFound: "
        "Could not find revision ({revision.parent}:6)",
        id="revscoring-400-parent-not-found",
    ),
    pytest.param(
        "wikidatawiki-itemquality",
        400,
        error(
            "error",
            "Unexpected content type for rev-id 7: UnexpectedContentType: Expected content of "
            "type JSON, but the following can't be parsed (max 50 chars showed): {{Infobox",
        ),
        ErrorType.UNSCORABLE,
        "Unexpected content type for rev-id 7: UnexpectedContentType: Expected content of "
        "type JSON, but the following can't be parsed (max 50 chars showed): {{Infobox",
        id="revscoring-400-unexpected-content-type",
    ),
    pytest.param(
        "enwiki-damaging",
        400,
        error(
            "error",
            "Missing resource for rev-id 7: CommentDeleted: Comment deleted (revision.comment)",
        ),
        ErrorType.DELETED,
        "Missing resource for rev-id 7: CommentDeleted: Comment deleted (revision.comment)",
        id="revscoring-400-comment-deleted",
    ),
    pytest.param(
        "enwiki-goodfaith",
        400,
        error("error", "Missing resource for rev-id 7: UserDeleted: User deleted (revision.user)"),
        ErrorType.DELETED,
        "Missing resource for rev-id 7: UserDeleted: User deleted (revision.user)",
        id="revscoring-400-user-deleted",
    ),
    pytest.param(
        "enwiki-articlequality",
        400,
        error(
            "error",
            "Missing resource for rev-id 7: RevisionNotFound: Could not find revision "
            "(revision.doc:7)",
        ),
        ErrorType.NOT_FOUND,
        "Missing resource for rev-id 7: RevisionNotFound: Could not find revision (revision.doc:7)",
        id="revscoring-400-revision-not-found",
    ),
    pytest.param(
        "enwiki-damaging",
        400,
        error(
            "error",
            "Missing resource for rev-id 7: PageNotFound: Could not find page (page.doc:3)",
        ),
        ErrorType.NOT_FOUND,
        "Missing resource for rev-id 7: PageNotFound: Could not find page (page.doc:3)",
        id="revscoring-400-page-not-found",
    ),
    pytest.param(
        "enwiki-damaging",
        400,
        error(
            "error",
            "Missing resource for rev-id 7: UserNotFound: Could not find user account "
            "(user.doc:'X')",
        ),
        ErrorType.UNSCORABLE,
        "Missing resource for rev-id 7: UserNotFound: Could not find user account (user.doc:'X')",
        id="revscoring-400-other-missing-resource",
    ),
    pytest.param(
        "enwiki-damaging",
        400,
        error(
            "error",
            "The MW API does not have any info related to the rev-id provided as input (7), "
            "therefore it is not possible to extract features properly. One possible cause is "
            "the deletion of the page related to the revision id. Please contact the ML-Team "
            "if you need more info.",
        ),
        ErrorType.NOT_FOUND,
        "The MW API does not have any info related to the rev-id provided as input (7), "
        "therefore it is not possible to extract features properly. One possible cause is "
        "the deletion of the page related to the revision id. Please contact the ML-Team "
        "if you need more info.",
        id="revscoring-400-no-info",
    ),
    pytest.param(
        "revertrisk-wikidata",
        400,
        error("detail", "Invalid rev_id: 0. The rev_id must be a positive integer."),
        ErrorType.BAD_REQUEST,
        "Invalid rev_id: 0. The rev_id must be a positive integer.",
        id="revertrisk-wikidata-400-invalid-rev-id",
    ),
]


@pytest.mark.parametrize(("model", "status", "raw", "error_type", "message"), FINAL)
async def test_final_answers_cost_one_request(
    fake_clock: FakeClock,
    model: str,
    status: int,
    raw: bytes,
    error_type: ErrorType,
    message: str,
) -> None:
    replay = Replay(fake_clock, status, raw)
    scores = await replay.send(model, [Revision.in_lang(7, "en")])
    assert scores == [
        Score(
            prediction=None,
            probability=None,
            model_version=None,
            error=error_type,
            error_message=message,
        )
    ]
    assert len(replay.script.requests) == 1
    assert replay.backoffs == []


TRANSIENT = [
    pytest.param(
        "revertrisk-language-agnostic",
        "An error happened while fetching info for revision from the MediaWiki API, please "
        "contact the ML-Team if the issue persists.",
        id="revertrisk-mw-api",
    ),
    pytest.param(
        "articlequality",
        "Fetching html failed for the article revision with id: 7. Reason: Service Unavailable",
        id="articlequality-service-unavailable",
    ),
    pytest.param(
        "enwiki-damaging",
        "An error happened while fetching feature values from the MediaWiki API, please "
        "contact the ML-Team if the issue persists.",
        id="revscoring-mw-api",
    ),
    pytest.param(
        "articlequality",
        "[503] Fetching html failed for the article revision with id: 7. Reason: Service "
        "Unavailable",
        id="articlequality-upstream-503",
    ),
    pytest.param(
        "articlequality",
        "[429] Fetching html failed for the article revision with id: 7. Reason: Too Many Requests",
        id="articlequality-upstream-429",
    ),
    pytest.param("articlequality", "KeyError : 'ann'", id="articlequality-keyerror"),
]


@pytest.mark.parametrize(("model", "message"), TRANSIENT)
async def test_other_500s_are_retried(fake_clock: FakeClock, model: str, message: str) -> None:
    replay = Replay(fake_clock, 500, error("error", message))
    scores = await replay.send(model, [Revision.in_lang(7, "en")])
    assert scores == [
        Score(
            prediction=None,
            probability=None,
            model_version=None,
            error=ErrorType.TRANSIENT_ERROR,
            error_message=f"HTTP 500 after 3 attempt(s): {message}",
        )
    ]
    assert len(replay.script.requests) == 3
    # Two backoffs of full jitter: uniform(0, 0.5) then uniform(0, 1.0).
    draws = random.Random(5)
    assert replay.backoffs == [draws.uniform(0.0, 0.5), draws.uniform(0.0, 1.0)]


async def test_an_unsupported_language_is_a_score_for_every_revision_of_the_batch(
    fake_clock: FakeClock,
) -> None:
    # aa.wikipedia.org is closed, so not in revertrisk's canonical list. Not a 404: the
    # model stays deployed, only this language is refused.
    raw = error("detail", "lang 'aa' does not exist in the canonical Wikipedia language list.")
    replay = Replay(fake_clock, 400, raw)
    scores = await replay.send(
        "revertrisk-language-agnostic", [Revision.in_lang(1, "aa"), Revision.in_lang(2, "aa")]
    )
    refused = Score(
        error=ErrorType.UNSUPPORTED_WIKI,
        error_message="lang 'aa' does not exist in the canonical Wikipedia language list.",
    )
    assert scores == [refused, refused]
    assert len(replay.script.requests) == 1
    refusals = replay.dispatcher.refusals
    assert refusals.answer("revertrisk-language-agnostic", "enwiki", [3]) is None
    assert refusals.answer("revertrisk-language-agnostic", "aawiki", [3]) == {3: refused}


async def test_a_batch_answer_with_errors_through_the_dispatcher(fake_clock: FakeClock) -> None:
    raw = (
        b'{"predictions":[{"model_name":"revertrisk-language-agnostic","model_version":"v1",'
        b'"wiki_db":"enwiki","revision_id":123456789,"output":{"prediction":false,'
        b'"probabilities":{"true":0.3403553068637848,"false":0.6596446931362152}}}],'
        b'"errors":["Could not make prediction for revision 5 (en). Reason: revision_missing"]}'
    )
    replay = Replay(fake_clock, 200, raw)
    scores = await replay.send(
        "revertrisk-language-agnostic",
        [Revision.in_lang(5, "en"), Revision.in_lang(123456789, "en")],
    )
    assert scores == [
        Score(
            error=ErrorType.NOT_FOUND,
            error_message="Could not make prediction for revision 5 (en). Reason: revision_missing",
        ),
        Score(
            prediction=False,
            probability={"true": 0.3403553068637848, "false": 0.6596446931362152},
            model_version="v1",
        ),
    ]
    assert len(replay.script.requests) == 1


async def test_a_batch_whose_every_revision_failed_gets_each_revisions_reason(
    fake_clock: FakeClock,
) -> None:
    # batch_model.py's 422 when no revision of the request could be scored (one or many);
    # the message is longer than a score keeps, so it is read from the whole body.
    revs = list(range(1_000_000_001, 1_000_000_021))
    reasons = ["revision_missing"] * 19 + ["other_reason"]
    keys = ", ".join(f"({rev}, 'de')" for rev in revs)
    raw = error(
        "detail",
        f"Could not make prediction for revisions dict_keys([{keys}]). Reason: {reasons}",
    )
    replay = Replay(fake_clock, 422, raw)
    scores = await replay.send(
        "revertrisk-language-agnostic", [Revision.in_lang(rev, "de") for rev in revs]
    )
    assert scores[0] == Score(
        error=ErrorType.NOT_FOUND,
        error_message="Could not make prediction for revision 1000000001. Reason: revision_missing",
    )
    assert [s.error for s in scores] == [ErrorType.NOT_FOUND] * 19 + [ErrorType.UNSCORABLE]
    assert scores[19].error_message == (
        "Could not make prediction for revision 1000000020. Reason: other_reason"
    )
    assert len(replay.script.requests) == 1
    # A body that does not list every revision asked keeps the request-wide answer.
    short = error(
        "detail", "Could not make prediction for revisions dict_keys([(7, 'de')]). Reason: ['x']"
    )
    replay = Replay(fake_clock, 422, short)
    scores = await replay.send(
        "revertrisk-language-agnostic", [Revision.in_lang(7, "de"), Revision.in_lang(8, "de")]
    )
    assert [s.error for s in scores] == [ErrorType.UNSCORABLE, ErrorType.UNSCORABLE]
