"""The `lwbatch` command line: the only layer that knows argv, flags, signals and exits."""

from lwbatch.cli.app import main

__all__ = ["main"]
