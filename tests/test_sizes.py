"""Sizes that read: no function over 80 lines, no library function over 12 parameters,
no module over 600 lines (the emulator under testing/ aside), no import cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "lwbatch"


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text())


def exempt(path: Path) -> bool:
    return "testing" in path.relative_to(PACKAGE).parts


def functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = function.args
    named = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if named and named[0].arg in ("self", "cls"):
        named = named[1:]
    # **given of a command collects its flags for the option groups to read.
    return len(named) + (args.vararg is not None)


def test_no_function_over_80_lines_or_12_parameters() -> None:
    long, wide = [], []
    for name, path, tree in modules():
        if exempt(path):
            continue
        for function in functions(tree):
            lines = (function.end_lineno or function.lineno) - function.lineno + 1
            if lines > 80:
                long.append((name, function.name, lines))
            if parameters(function) > 12:
                wide.append((name, function.name, parameters(function)))
    assert (long, wide) == ([], [])


def test_no_module_over_600_lines() -> None:
    big = [
        (name, len(path.read_text().splitlines()))
        for name, path, _ in modules()
        if not exempt(path) and len(path.read_text().splitlines()) > 600
    ]
    assert big == []


def imports_at_load(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The lwbatch modules `name` imports when it is loaded: module-level imports, not
    those under TYPE_CHECKING or inside functions."""
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node) if not isinstance(node, ast.FunctionDef) else ():
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                break
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                base = child.module
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in known else base)
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
    return {m for m in found if m in known and m != name}


def test_no_import_cycle() -> None:
    trees = {name: tree for name, _, tree in modules()}
    known = set(trees)
    graph = {name: imports_at_load(name, tree, known) for name, tree in trees.items()}
    # A package imports its submodules' names through __init__; only cycles between
    # modules count, not a package and its own children.
    cycles = []
    for start in graph:
        stack, seen = [(start, (start,))], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start and len(path) > 1:
                    if not all(p.startswith(start) or start.startswith(p) for p in path):
                        cycles.append(path)
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
    assert cycles == []
