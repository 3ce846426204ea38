"""What goes on the wire to a model server, and the one answer header read back.

The request body is Lift Wing's JSON: one instance, or ``{"instances": [...]}`` for a
batch. ``Retry-After`` (RFC 9110, section 10.2.3) comes as delta-seconds or an HTTP-date.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Sequence
from typing import Any

import orjson

from lwbatch.protocol.catalog import ModelSpec
from lwbatch.results import Revision
from lwbatch.wikis import LangForm

# A cap, so that one wrong or hostile header cannot hold the whole run for days.
_MAX_RETRY_AFTER = 3600.0


def build_payload(spec: ModelSpec, revisions: Sequence[Revision]) -> bytes:
    """The JSON body: one instance, or ``{"instances": [...]}`` for a batch."""
    fields = spec.family.payload
    form = spec.family.lang_form
    if fields == ("rev_id",):
        instances: list[dict[str, Any]] = [{"rev_id": r.rev_id} for r in revisions]
    else:
        instances = [_instance(fields, form, r) for r in revisions]
    if len(instances) == 1:
        return orjson.dumps(instances[0])
    return orjson.dumps({"instances": instances})


def _instance(fields: Sequence[str], form: LangForm, revision: Revision) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        if name == "lang":
            out[name] = revision.wiki.lang_for(form)
        elif name == "page_id":
            # The page by id, else by title: the server takes exactly one of them.
            if revision.page_id is not None or revision.page_title is None:
                out[name] = revision.page_id
            else:
                out["page_title"] = revision.page_title
        else:  # rev_id, or revision_id where the server reads that name
            out[name] = revision.rev_id
    return out


def parse_retry_after(value: str | None, *, default: float) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    seconds = read_retry_after(value)
    return default if seconds is None else seconds


def read_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header, or None if it is absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
        if not math.isfinite(seconds):
            return None
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)
