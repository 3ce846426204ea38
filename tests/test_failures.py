"""What each error body means (lwbatch/protocol/failures.py), rule by rule.

Each body is the message a model server builds (Wikimedia's inference-services, its
kserve fork, revscoring, read from source), next to near misses that must keep their
status's default meaning. Every expected label is written out here by hand.
"""

from __future__ import annotations

import orjson
import pytest

from lwbatch.protocol.failures import all_failed, error_message, error_text, read_error
from lwbatch.results import ErrorType, Score

NOT_FOUND, DELETED, UNSCORABLE = ErrorType.NOT_FOUND, ErrorType.DELETED, ErrorType.UNSCORABLE
BAD_REQUEST, UNSUPPORTED = ErrorType.BAD_REQUEST, ErrorType.UNSUPPORTED_WIKI


def kind(status: int, message: str, asked: tuple[int, ...] = (123,)) -> ErrorType | None:
    found = read_error(status, message, asked)
    return None if found is None else found.error


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        # revscoring
        (
            400,
            "The MW API does not have any info related to the rev-id provided as input "
            "(123), therefore it is not possible to extract features properly.",
            NOT_FOUND,
        ),
        (400, "Missing resource for rev-id 123: TextDeleted: Text deleted (x)", DELETED),
        (400, "Missing resource for rev-id 123: CommentDeleted: Comment deleted (x)", DELETED),
        (400, "Missing resource for rev-id 123: UserDeleted: User deleted (x)", DELETED),
        (
            400,
            "Missing resource for rev-id 123: RevisionNotFound: Could not find revision "
            "({revision}:123)",
            NOT_FOUND,
        ),
        (
            400,
            "Missing resource for rev-id 123: PageNotFound: Could not find page (x:9)",
            NOT_FOUND,
        ),
        (
            400,
            "Missing resource for rev-id 123: UserNotFound: Could not find user account (x:'A')",
            UNSCORABLE,
        ),
        # Only the kind right after "rev-id N: " counts, not a word further on.
        (400, "Missing resource for rev-id 123: UserNotFound: TextDeleted", UNSCORABLE),
        (
            400,
            "Unexpected content type for rev-id 123: UnexpectedContentType: Expected content "
            "of type JSON, but the following can't be parsed (max 50 chars showed): {{Infobox",
            UNSCORABLE,
        ),
        # A catch-all around any exception, temporary ones included: retried.
        (400, "Generic error while extracting features for rev-id 1: TimeoutError", None),
        (400, "Generic error while extracting features for rev-id 1: TextDeleted", None),
        (400, 'Expected "rev_id" to be an integer.', BAD_REQUEST),
        # readability
        (400, "Unsupported lang: xx.", UNSUPPORTED),
        (
            400,
            "The necessary features cannot be obtained from the MediaWiki API. This could be "
            "because the data does not exist or has been deleted.",
            NOT_FOUND,
        ),
        (400, "The parameter lang is required.", BAD_REQUEST),
        # revertrisk
        (400, "lang 'xx' does not exist in the canonical Wikipedia language list.", UNSUPPORTED),
        (
            400,
            "Language field should not have a 'wiki' suffix, i.e. use 'en', not 'enwiki'",
            BAD_REQUEST,
        ),
        (
            422,
            "Could not make prediction for revision 123 (en). Reason: revision_missing",
            NOT_FOUND,
        ),
        (
            422,
            "Could not make prediction for revision 123 (en). Reason: revision_info_deleted",
            DELETED,
        ),
        (
            422,
            "Could not make prediction for revision 123 (en). Reason: parent_revision_missing",
            UNSCORABLE,
        ),
        (422, "Could not make prediction for revision 123 (en). Reason: other_reason", UNSCORABLE),
        # The reason is one code, the whole of what follows "Reason: ".
        (
            422,
            "Could not make prediction for revision 123 (en). Reason: revision_missing_x",
            UNSCORABLE,
        ),
        (
            422,
            "Could not make prediction for revision 123 (en). Reason: revision_missing or not",
            UNSCORABLE,
        ),
        # reference-need / reference-risk: a code (until Feb 2025) ...
        (
            400,
            "Could not make prediction for revision 143077740 (pt). Reason: revision_missing",
            NOT_FOUND,
        ),
        # ... or MediaWiki's response body since.
        (
            400,
            "Could not make prediction for revision 123 (pt). Reason: {'batchcomplete': True, "
            "'query': {'badrevids': {'123': {'revid': 123, 'missing': True}}}}",
            NOT_FOUND,
        ),
        (
            400,
            "Could not make prediction for revision 123 (pt). Reason: {'query': {'pages': "
            "{'9': {'revisions': [{'revid': 123, 'texthidden': True}]}}}}",
            DELETED,
        ),
        (
            400,
            "Could not make prediction for revision 123 (pt). Reason: {'error': {'code': "
            "'badvalue', 'info': 'Unrecognized value'}}",
            BAD_REQUEST,
        ),
        # outlink-topic-model
        (
            400,
            "Cannot fetch revision 5 on en.wikipedia.org: MediaWiki API error 'nosuchrevid'.",
            NOT_FOUND,
        ),
        (
            400,
            "Cannot fetch revision 5 on en.wikipedia.org: MediaWiki API error 'permissiondenied'.",
            DELETED,
        ),
        (
            400,
            "Cannot fetch revision 5 on en.wikipedia.org: MediaWiki API error 'invalidtitle'.",
            BAD_REQUEST,
        ),
        # revertrisk-wikidata
        (400, "Invalid rev_id: 0. The rev_id must be a positive integer.", BAD_REQUEST),
        # Rules are per status: a 400 body under another 4xx is just that 4xx.
        (403, "Unsupported lang: xx.", BAD_REQUEST),
        (422, "Unsupported lang: xx.", UNSCORABLE),
        (403, "Forbidden", BAD_REQUEST),
        # 500s
        (
            500,
            "Error in preprocess for rev_id 123. Reason: Failed to fetch revision content in "
            "_get_revision_content for rev_id 123. Reason: 'pages'",
            NOT_FOUND,
        ),
        (
            500,
            "Error in preprocess for rev_id 123. Reason: Failed to fetch metadata features in "
            "_fetch_metadata_features for rev_id 123. Reason: 'user'",
            UNSCORABLE,
        ),
        # articlequality, with the upstream status the kserve fork prints first ...
        (
            500,
            "[404] Fetching html failed for the article revision with id: 123. Reason: Not Found",
            NOT_FOUND,
        ),
        (
            500,
            "[403] Fetching html failed for the article revision with id: 123. Reason: Forbidden",
            DELETED,
        ),
        (
            500,
            "[410] Fetching html failed for the article revision with id: 1. Reason: Gone",
            UNSCORABLE,
        ),
        (
            500,
            "[400] Fetching html failed for the article revision with id: 1. Reason: Bad",
            UNSCORABLE,
        ),
        (500, "[429] Fetching html failed for the article revision with id: 1. Reason: Too", None),
        (500, "[503] Fetching html failed for the article revision with id: 1. Reason: Svc", None),
        (500, "[502] Fetching html failed for the article revision with id: 1. Reason: Bad", None),
        (500, "[500] Fetching html failed for the article revision with id: 1. Reason: Int", None),
        # ... and without it (older images)
        (
            500,
            "Fetching html failed for the article revision with id: 123. Reason: Not Found",
            NOT_FOUND,
        ),
        (
            500,
            "Fetching html failed for the article revision with id: 7. Reason: Service Unavailable",
            None,
        ),
        (500, "Article with language en and revid 123 has errors when preprocessing", UNSCORABLE),
        # The status comes first or not at all; no space after it is not the fork's.
        (500, "[404]Fetching html failed for the article revision with id: 1. Reason: X", None),
        (500, "Reason: [404] Not Found", None),
        # The reason is the whole of what follows "Reason: ".
        (
            500,
            "Fetching html failed for the article revision with id: 7. Reason: Not Found yet",
            None,
        ),
        (
            500,
            "Error in preprocess for rev_id 7. Reason: Failed to fetch revision content in "
            "_get_revision_content for rev_id 7. Reason: Cannot connect to host",
            None,
        ),
        (
            500,
            "An error happened while fetching info for revision from the MediaWiki API, "
            "please contact the ML-Team if the issue persists.",
            None,
        ),
        (
            500,
            "An error happened while fetching feature values from the MediaWiki API, "
            "please contact the ML-Team if the issue persists.",
            None,
        ),
        (500, "KeyError : 'ann'", None),
        # Only kserve's 500 says this; a gateway's 503 is an outage whatever it carries.
        (
            503,
            "Fetching html failed for the article revision with id: 7. Reason: Not Found",
            None,
        ),
        (502, "Article with language en and revid 123 has errors when preprocessing", None),
    ],
)
def test_each_rule(status: int, message: str, error: ErrorType | None) -> None:
    assert kind(status, message) is error


@pytest.mark.parametrize(
    ("status", "message", "asked", "expected"),
    [
        # revscoring fetches the parent too; the message still names the asked rev-id.
        (
            400,
            "Missing resource for rev-id 7: RevisionNotFound: Could not find revision "
            "({revision.parent}:6)",
            (7,),
            "parent revision 6 not found: Missing resource for rev-id 7: RevisionNotFound: "
            "Could not find revision ({revision.parent}:6)",
        ),
        (
            400,
            "Missing resource for rev-id 7: TextDeleted: Text deleted "
            "(datasource.revision.parent.text)",
            (7,),
            "parent revision deleted: Missing resource for rev-id 7: TextDeleted: Text deleted "
            "(datasource.revision.parent.text)",
        ),
        # revertrisk-wikidata names the revision it could not fetch: here the parent.
        (
            500,
            "Error in preprocess for rev_id 7. Reason: Failed to fetch revision content in "
            "_get_revision_content for rev_id 6. Reason: 'pages'",
            (7,),
            "parent revision 6 not found: Error in preprocess for rev_id 7. Reason: Failed to "
            "fetch revision content in _get_revision_content for rev_id 6. Reason: 'pages'",
        ),
        # Without the server's own "rev_id N" the request's revisions tell.
        (
            500,
            "Failed to fetch revision content in _get_revision_content for rev_id 6. "
            "Reason: 'pages'",
            (7,),
            "parent revision 6 not found: Failed to fetch revision content in "
            "_get_revision_content for rev_id 6. Reason: 'pages'",
        ),
        (
            422,
            "Could not make prediction for revision 7 (en). Reason: parent_revision_missing",
            (7,),
            "parent revision missing: Could not make prediction for revision 7 (en). "
            "Reason: parent_revision_missing",
        ),
        (
            400,
            "Could not make prediction for revision 7 (pt). Reason: {'batchcomplete': True, "
            "'query': {'badrevids': {'6': {'revid': 6, 'missing': True}}}}",
            (7,),
            "parent revision 6 not found: Could not make prediction for revision 7 (pt). "
            "Reason: {'batchcomplete': True, 'query': {'badrevids': {'6': {'revid': 6, "
            "'missing': True}}}}",
        ),
    ],
)
def test_answers_about_the_parent_are_unscorable_not_the_revisions_own(
    status: int, message: str, asked: tuple[int, ...], expected: str
) -> None:
    assert read_error(status, message, asked) == Score.failed(ErrorType.UNSCORABLE, expected)


def test_a_fetch_failure_named_for_the_revision_asked_is_not_found() -> None:
    text = "Failed to fetch revision content in _get_revision_content for rev_id 6. Reason: 'pages'"
    assert read_error(500, text, (6,)) == Score.failed(NOT_FOUND, text)


def test_a_guess_is_final_for_the_run_but_never_cached() -> None:
    hidden_user = (
        "Error in preprocess for rev_id 7. Reason: Failed to fetch metadata features in "
        "_fetch_metadata_features for rev_id 7. Reason: 'user'"
    )
    found = read_error(500, hidden_user, (7,))
    assert found is not None and found.error is ErrorType.UNSCORABLE
    assert found.cacheable is False
    missing = read_error(
        500,
        "[404] Fetching html failed for the article revision with id: 7. Reason: Not Found",
        (7,),
    )
    assert missing is not None and missing.cacheable is True


def test_every_revision_failed_gets_each_code_read() -> None:
    text = (
        "Could not make prediction for revisions dict_keys([(1, 'en'), (2, 'en'), (3, 'en'), "
        "(4, 'en')]). Reason: ['revision_missing', 'revision_info_deleted', "
        "'parent_revision_missing', 'unexpected']"
    )
    assert all_failed(text) == {
        1: Score.failed(
            NOT_FOUND, "Could not make prediction for revision 1. Reason: revision_missing"
        ),
        2: Score.failed(
            DELETED, "Could not make prediction for revision 2. Reason: revision_info_deleted"
        ),
        3: Score.failed(
            UNSCORABLE,
            "parent revision missing: Could not make prediction for revision 3. "
            "Reason: parent_revision_missing",
        ),
        4: Score.failed(UNSCORABLE, "Could not make prediction for revision 4. Reason: unexpected"),
    }
    assert all_failed("Could not make prediction for revisions dict_keys([(1, 'en')]).") is None
    # A reason per revision, or the body is not read.
    assert (
        all_failed(
            "Could not make prediction for revisions dict_keys([(1, 'en'), (2, 'en')]). "
            "Reason: ['revision_missing']"
        )
        is None
    )


def test_a_long_message_is_read_whole_and_kept_short() -> None:
    body = orjson.dumps(
        {
            "error": "Could not make prediction for revision 7 (pt). Reason: {"
            + "'x': 1, " * 60
            + "'query': {'badrevids': {'7': {'revid': 7, 'missing': True}}}}"
        }
    )
    text = error_text(body)
    found = read_error(400, text, (7,))
    assert found is not None and found.error is NOT_FOUND
    assert found.error_message == text[:300]
    assert len(error_message(body)) == 300


def test_error_message_reads_error_detail_or_text() -> None:
    assert error_message(orjson.dumps({"error": "boom"})) == "boom"
    assert error_message(orjson.dumps({"detail": "nope"})) == "nope"
    assert error_message(orjson.dumps({"httpCode": 404, "httpReason": "Not Found"})) == "Not Found"
    assert error_message(b"  Unauthorized \n") == "Unauthorized"
    assert error_message(orjson.dumps({"message": "gateway says"})) == "gateway says"
    assert error_message(orjson.dumps({"error": {"code": 7}})) == '{"code":7}'
    assert error_message(orjson.dumps([1, 2])) == "[1,2]"
    assert error_message(b"\xff oops") == "\ufffd oops"
