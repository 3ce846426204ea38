"""A journal's manifest: what its run computes (input, key columns, models), so that a
rerun that would compute something else is refused instead of mixed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from lwbatch.errors import RestartNeeded
from lwbatch.keys import KeyLayout

# 2: keys are (wiki, rev_id) where the input names a wiki (answer lines [wiki, rev_id]).
FORMAT_VERSION = 2
_SAME = (
    ("format", "journal format"),
    ("input", "input file"),
    ("id_column", "`id_column`"),
    ("lang", "`lang`"),
    ("wiki_column", "`wiki_column`"),
    ("keep_columns", "`keep_columns`"),
    ("models", "model list"),
)


def read_manifest(path: Path, journal: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        raise RestartNeeded(
            f"{journal} is not a readable lwbatch journal; remove it or pass `restart=True`"
        ) from None
    return manifest


def check_same(
    previous: dict[str, Any], manifest: dict[str, Any], layout: KeyLayout, output: Path
) -> None:
    """Refuse, in words, a run of `output` that computes otherwise than `previous`."""
    if previous.get("format") == 1:
        if layout.wiki_column is not None:
            raise RestartNeeded(
                f"{output} belongs to a run of an earlier lwbatch, which keyed rows "
                f"by rev_id alone; this input's {layout.wiki_column!r} column now "
                "keys them by (wiki, rev_id): pass `restart=True` to score it afresh, "
                "or choose another output"
            )
        # Without a wiki column, format 1 is format 2: rows keyed by rev_id alone.
        previous = {**previous, "format": FORMAT_VERSION, "wiki_column": None}
    if previous.get("wiki_column") is None and manifest.get("wiki_column") == "wiki_db":
        raise RestartNeeded(
            f"{output} belongs to a run that read this input's wiki_db column as nothing "
            "(lwbatch before 0.2 scored every row as one wiki's); it now keys rows by "
            "(wiki_db, rev_id): pass `restart=True` to score it afresh, or choose another "
            "output"
        )
    for key, label in _SAME:
        if previous.get(key) != manifest.get(key):
            raise RestartNeeded(
                f"{output} belongs to a run with another {label} "
                f"({_show(previous.get(key))} instead of {_show(manifest.get(key))}); "
                "rerun it as it was, choose another output, "
                "or pass `restart=True` to replace it"
            )


def _show(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("files"), list):
        names = [str(f.get("path")) for f in value["files"][:3] if isinstance(f, dict)]
        more = ", ..." if len(value["files"]) > 3 else ""
        return f"{len(value['files'])} files: {', '.join(names)}{more}"
    if isinstance(value, dict) and "path" in value:
        return f"{value['path']} ({value['size']:,} bytes)"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if value is None:
        return "none"
    return repr(value)


__all__ = ["FORMAT_VERSION", "check_same", "read_manifest"]
