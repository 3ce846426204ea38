"""Files shipped with lwbatch, all found one way: relative to the installed package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLE_NAME = "sample_revisions.parquet"


def _package() -> Path:
    return Path(str(resources.files("lwbatch")))


def catalogue_path() -> Path:
    """configs/models.toml: inside the package in a wheel, beside it in a checkout."""
    package = _package()
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "models.toml").is_file():
            return candidate / "models.toml"
    raise FileNotFoundError("configs/models.toml is missing from the lwbatch installation")


def wikis_path() -> Path:
    """Wikimedia's canonical wiki list (database names, languages, domains)."""
    return _package() / "data" / "wikis.tsv"


def coverage_path(name: str) -> Path:
    """One model server's list of the wikis it scores (lwbatch/protocol/coverage.py)."""
    path = _package() / "data" / "coverage" / f"{name}.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"no coverage list {name!r} in the lwbatch installation")
    return path


def sample_path() -> Path:
    """The demo's sample input (enwiki/dewiki/frwiki rev_ids, duplicates, unknown ids)."""
    return _package() / "data" / SAMPLE_NAME
