from __future__ import annotations

import subprocess
import sys

import lwbatch


def test_all_is_sorted_and_importable() -> None:
    assert lwbatch.__all__ == sorted(lwbatch.__all__)
    for name in lwbatch.__all__:
        assert hasattr(lwbatch, name), name


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lwbatch", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"lwbatch, version {lwbatch.__version__}"


def test_importing_lwbatch_and_its_cli_imports_no_pyspark() -> None:
    code = "import sys, lwbatch, lwbatch.cli; print(sorted(m for m in sys.modules if 'spark' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "[]")


def test_the_public_face_is_small() -> None:
    assert len(lwbatch.__all__) <= 40


def test_a_name_that_left_the_top_level_still_works_with_a_warning() -> None:
    import pytest

    from lwbatch.pacing.limiter import BudgetLimiter
    from lwbatch.protocol.catalog import default_catalog

    with pytest.warns(DeprecationWarning) as said:
        moved = lwbatch.BudgetLimiter  # type: ignore[attr-defined]
    assert moved is BudgetLimiter
    assert str(said[0].message) == (
        "lwbatch.BudgetLimiter is now lwbatch.pacing.limiter.BudgetLimiter: import it from "
        "there (the top-level name goes in the next release)"
    )
    with pytest.warns(DeprecationWarning):
        assert lwbatch.default_catalog is default_catalog  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        _ = lwbatch.nothing  # type: ignore[attr-defined]
    # Every moved name resolves to what its module holds.
    import importlib

    for name, module in lwbatch.MOVED.items():
        with pytest.warns(DeprecationWarning):
            assert getattr(lwbatch, name) is getattr(importlib.import_module(module), name)
