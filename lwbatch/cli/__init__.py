"""The `lwbatch` command line: the only layer that knows argv, flags, signals and exits."""

from lwbatch.cli.commands import main

__all__ = ["main"]
