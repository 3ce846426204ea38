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
