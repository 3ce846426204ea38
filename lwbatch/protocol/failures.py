"""What a model server's error answer means: a final answer about the revision, or a
failure worth another try.

Each rule quotes the bodies of named servers (Wikimedia's inference-services, its kserve
fork, revscoring), read from their source; a body no rule matches keeps its status's
default meaning: a 5xx is retried, a 422 is `unscorable`, any other 4xx `bad_request`.
Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

from lwbatch.results import ErrorType, Score

MAX_MESSAGE = 300

# Wikimedia's kserve fork prints an InferenceError's upstream status first
# (`"[" + status + "] " + reason`, kserve/errors.py): articlequality's
# "[404] Fetching html failed for the article revision with id: N. Reason: Not Found".
_UPSTREAM = re.compile(r"^\[([45]\d\d)\] ")

# 500s about one revision: kserve turns an InferenceError into 500 {"error": ...}.
# revertrisk-wikidata, MediaWiki's answer has no `pages` (no such revision); P is the
# revision asked or its parent, which the server fetches too:
# "Error in preprocess for rev_id N. Reason: Failed to fetch revision content in
# _get_revision_content for rev_id P. Reason: 'pages'"
_WIKIDATA_PAGES = re.compile(
    r"Failed to fetch revision content in _get_revision_content for rev_id (\d+)\. "
    r"Reason: 'pages'$"
)
_PREPROCESS = re.compile(r"^Error in preprocess for rev_id (\d+)\. ")
# revertrisk-wikidata reads revision["user"], absent when the user is hidden (a reading
# of the code, so final for this run but never cached):
# "... Failed to fetch metadata features in _fetch_metadata_features for rev_id N.
# Reason: 'user'"
_WIKIDATA_USER = re.compile(
    r"Failed to fetch metadata features in _fetch_metadata_features for rev_id \d+\. "
    r"Reason: 'user'$"
)
# articlequality before the kserve fork printed the status: the REST API answered 404.
_HTML_NOT_FOUND = re.compile(
    r"^Fetching html failed for the article revision with id: \d+\. Reason: Not Found$"
)
# articlequality, an article whose text is empty: "Article with language L and revid N
# has errors when preprocessing"
_EMPTY_ARTICLE = re.compile(
    r"^Article with language \S+ and revid \d+ has errors when preprocessing"
)

# 400s that are final for every revision of that (model, language).
_UNSUPPORTED_LANG = (
    # readability, reference-need/-risk (check_supported_wikis): "Unsupported lang: xx."
    re.compile(r"^Unsupported lang: "),
    # revertrisk: "lang 'xx' does not exist in the canonical Wikipedia language list."
    re.compile(r"^lang '[^']*' does not exist in the canonical Wikipedia language list\.$"),
)
# revscoring 400: "The MW API does not have any info related to the rev-id provided as
# input (N), ..." (badrevids: unknown revision or deleted page)
_NO_INFO = "The MW API does not have any info related to the rev-id"
# readability 400: "The necessary features cannot be obtained from the MediaWiki API.
# This could be because the data does not exist or has been deleted."
_NO_FEATURES = "The necessary features cannot be obtained from the MediaWiki API."
# revscoring 400 (extractor_utils.fetch_features): "Missing resource for rev-id N:
# KIND: ..." with KIND a MissingResource class whose text names its data source:
# "Text deleted (datasource.revision.text)", "Could not find revision ({revision}:N)".
# The asked revision's parent shows as `revision.parent`.
_MISSING_RESOURCE = re.compile(r"^Missing resource for rev-id \d+: (\w+)")
_MISSING_RESOURCE_KINDS = {
    "TextDeleted": ErrorType.DELETED,
    "CommentDeleted": ErrorType.DELETED,
    "UserDeleted": ErrorType.DELETED,
    "RevisionNotFound": ErrorType.NOT_FOUND,
    "PageNotFound": ErrorType.NOT_FOUND,
}
_PARENT_SOURCE = "revision.parent"
_PARENT_ID = re.compile(r"\{revision\.parent\}:(\d+)")
# revscoring 400: "Unexpected content type for rev-id N: ..." (not wikitext/JSON: a fact
# about the revision) and "Generic error while extracting features for rev-id N: ..."
# (a catch-all around any exception, temporary ones included: retried).
_CONTENT_TYPE = "Unexpected content type for rev-id "
_GENERIC = "Generic error while extracting features for rev-id "
# outlink-topic-model 400: "Cannot fetch revision N on xx.wikipedia.org: MediaWiki API
# error 'CODE'." (other codes, e.g. invalidtitle, stay bad_request)
_MW_API_ERROR = re.compile(r"^Cannot fetch revision \d+ on \S+: MediaWiki API error '(\w+)'\.$")
_MW_API_CODES = {"nosuchrevid": ErrorType.NOT_FOUND, "permissiondenied": ErrorType.DELETED}
# revertrisk (422, each item of a batch's `errors`), reference-need/-risk before Feb 2025
# (400): "Could not make prediction for revision N (xx). Reason: CODE", CODE a
# knowledge_integrity error code. reference-need/-risk since then print MediaWiki's
# response instead of a code: "... Reason: {rev.response_body}".
_NO_PREDICTION = re.compile(
    r"^Could not make prediction for revision (\d+) \([^)]*\)\. Reason: (.*)$", re.DOTALL
)
_CODE = re.compile(r"\w+")
# In MediaWiki's response: a revision it does not know, or one whose content is hidden.
_MW_UNKNOWN = re.compile(r"""['"](?:badrevids|nosuchrevid|missing)['"]""")
_MW_BAD_REVID = re.compile(r"""['"]badrevids['"]:\s*\{\s*['"]?(\d+)""")
_MW_HIDDEN = re.compile(r"""['"](?:texthidden|sha1hidden|suppressed|permissiondenied)['"]""")
# revertrisk's batch server when every revision of a request fails (422, even for one):
# "Could not make prediction for revisions dict_keys([(N, 'xx'), ...]). Reason: ['CODE', ...]"
_ALL_FAILED = re.compile(
    r"^Could not make prediction for revisions dict_keys\(\[(.*)\]\)\. Reason: \[(.*)\]$"
)
# revertrisk, reference-need/-risk: fetching a revision raised (500). The batch server
# fetches every revision of a request first, so one such revision fails its batch.
_FETCH_FAILURE = "An error happened while fetching info for revision from the MediaWiki API"
_ALL_FAILED_REVISION = re.compile(r"\((\d+), '[^']*'\)")
_ALL_FAILED_CODE = re.compile(r"'(\w+)'")


def error_text(body: bytes) -> str:
    """The whole human message of an error body: its `error` or `detail`, else its text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        for key in ("error", "detail", "httpReason", "message"):
            value = data.get(key)
            if value:
                return value if isinstance(value, str) else orjson.dumps(value).decode()
    return orjson.dumps(data).decode()


def error_message(body: bytes) -> str:
    """The message a score keeps: :func:`error_text`, cut to a readable length."""
    return error_text(body)[:MAX_MESSAGE]


def read_error(status: int, text: str, asked: Sequence[int]) -> Score | None:
    """A 4xx (other than 401, 404, 429) or 5xx answer: the score each revision of the
    request gets, or None if it is worth another try. `text` is :func:`error_text`."""
    if (upstream := _UPSTREAM.match(text)) is not None:
        return _upstream(int(upstream[1]), text)
    if status >= 500:
        return _server_error(status, text, asked)
    if status == 422:
        return _no_prediction(text) or _failed(ErrorType.UNSCORABLE, text)
    if status == 400:
        return _bad_request(text)
    return _failed(ErrorType.BAD_REQUEST, text)


def _upstream(status: int, text: str) -> Score | None:
    """The status of the server's own upstream (the MediaWiki REST API), printed first."""
    if status == 404:
        return _failed(ErrorType.NOT_FOUND, text)
    if status == 403:  # MediaWiki's answer for a suppressed revision
        return _failed(ErrorType.DELETED, text)
    if status == 429 or status >= 500:
        return None  # retried, without the pool-wide pause of the gateway's own 429
    return _failed(ErrorType.UNSCORABLE, text)


def _server_error(status: int, text: str, asked: Sequence[int]) -> Score | None:
    if status != 500:
        return None
    if (match := _WIKIDATA_PAGES.search(text)) is not None:
        fetched = int(match[1])
        # The revision the server was asked, as it says, else as lwbatch sent it.
        said = _PREPROCESS.match(text)
        if (fetched != int(said[1])) if said else (asked and fetched not in asked):
            return _parent(f"parent revision {fetched} not found", text)
        return _failed(ErrorType.NOT_FOUND, text)
    if _WIKIDATA_USER.search(text):
        return _failed(ErrorType.UNSCORABLE, text, cacheable=False)
    if _HTML_NOT_FOUND.match(text):
        return _failed(ErrorType.NOT_FOUND, text)
    if _EMPTY_ARTICLE.match(text):
        return _failed(ErrorType.UNSCORABLE, text)
    return None


def _bad_request(text: str) -> Score | None:
    if any(rule.search(text) for rule in _UNSUPPORTED_LANG):
        return _failed(ErrorType.UNSUPPORTED_WIKI, text)
    if text.startswith((_NO_INFO, _NO_FEATURES)):
        return _failed(ErrorType.NOT_FOUND, text)
    if (match := _MISSING_RESOURCE.match(text)) is not None:
        error = _MISSING_RESOURCE_KINDS.get(match[1], ErrorType.UNSCORABLE)
        if _PARENT_SOURCE in text and error is not ErrorType.UNSCORABLE:
            parent = _PARENT_ID.search(text)
            what = "not found" if error is ErrorType.NOT_FOUND else "deleted"
            named = f" {parent[1]}" if parent else ""
            return _parent(f"parent revision{named} {what}", text)
        return _failed(error, text)
    if text.startswith(_CONTENT_TYPE):
        return _failed(ErrorType.UNSCORABLE, text)
    if text.startswith(_GENERIC):
        return None
    if (match := _MW_API_ERROR.match(text)) and match[1] in _MW_API_CODES:
        return _failed(_MW_API_CODES[match[1]], text)
    return _no_prediction(text) or _failed(ErrorType.BAD_REQUEST, text)


def _no_prediction(text: str) -> Score | None:
    """A "Could not make prediction for revision N (xx). Reason: ..." answer, or None."""
    match = _NO_PREDICTION.match(text)
    if match is None:
        return None
    reason = match[2]
    if _CODE.fullmatch(reason):
        return code_score(reason, text)
    return _mediawiki_body(int(match[1]), reason, text)


def code_score(code: str, text: str) -> Score:
    """A knowledge_integrity error code (revertrisk, reference-need/-risk) -> its score."""
    if code == "revision_missing":
        return _failed(ErrorType.NOT_FOUND, text)
    if code == "revision_info_deleted":  # deleted or suppressed (reported by users)
        return _failed(ErrorType.DELETED, text)
    if code == "parent_revision_missing":
        return _parent("parent revision missing", text)
    return _failed(ErrorType.UNSCORABLE, text)


def _mediawiki_body(rev_id: int, body: str, text: str) -> Score | None:
    """reference-need/-risk print MediaWiki's response where a code stood: read it for
    an unknown or hidden revision; anything else stays a bad request."""
    if _MW_UNKNOWN.search(body):
        named = _MW_BAD_REVID.search(body)
        if named is not None and int(named[1]) != rev_id:
            return _parent(f"parent revision {named[1]} not found", text)
        return _failed(ErrorType.NOT_FOUND, text)
    if _MW_HIDDEN.search(body):
        return _failed(ErrorType.DELETED, text)
    return None


def is_fetch_failure(text: str) -> bool:
    """revertrisk's 500 when fetching any one revision of the request raised: the whole
    batch fails for one revision (batch_model.py, base_model.py)."""
    return text.startswith(_FETCH_FAILURE)


def batch_item_score(text: str) -> Score:
    """One entry of a batch answer's `errors` (or an older server's error string inside
    `predictions`)."""
    return _no_prediction(text) or _failed(ErrorType.UNSCORABLE, text)


def all_failed(text: str) -> dict[int, Score] | None:
    """A score per revision of a batch server's "every revision failed" 422, or None."""
    match = _ALL_FAILED.match(text)
    if match is None:
        return None
    revisions = [int(rev) for rev in _ALL_FAILED_REVISION.findall(match[1])]
    codes = _ALL_FAILED_CODE.findall(match[2])
    if not revisions or len(revisions) != len(codes):
        return None
    return {
        rev: code_score(code, f"Could not make prediction for revision {rev}. Reason: {code}")
        for rev, code in zip(revisions, codes, strict=True)
    }


def _parent(what: str, text: str) -> Score:
    # Not the asked revision's fault: it exists, and so it is neither not_found nor
    # deleted; the model cannot score it without its parent.
    return _failed(ErrorType.UNSCORABLE, f"{what}: {text}")


def _failed(error: ErrorType, text: str, *, cacheable: bool = True) -> Score:
    return Score.failed(error, text[:MAX_MESSAGE], cacheable=cacheable)


__all__ = [
    "MAX_MESSAGE",
    "all_failed",
    "batch_item_score",
    "code_score",
    "error_message",
    "error_text",
    "is_fetch_failure",
    "read_error",
]
