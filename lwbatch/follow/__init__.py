"""`lwbatch follow`: keep a scored dataset current from Wikimedia's event stream."""

from __future__ import annotations

from lwbatch.follow.core import Batch, Filters, Follower, StreamGapError, StreamPosition
from lwbatch.follow.session import Followed, Following, follow

__all__ = [
    "Batch",
    "Filters",
    "Followed",
    "Following",
    "Follower",
    "StreamGapError",
    "StreamPosition",
    "follow",
]
