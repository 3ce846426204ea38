"""`lwbatch follow`: keep a scored dataset current from Wikimedia's event stream."""

from __future__ import annotations

from lwbatch.streaming.core import Batch, Filters, Follower, StreamGapError, StreamPosition
from lwbatch.streaming.session import Followed, Following, StreamSource, follow

__all__ = [
    "Batch",
    "Filters",
    "Followed",
    "Following",
    "Follower",
    "StreamGapError",
    "StreamPosition",
    "StreamSource",
    "follow",
]
