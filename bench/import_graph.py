"""The import graph of vidloom's packages and modules, read from the source (ast; nothing is imported).

Every import counts, at the top of a module or inside a function: an import moved into a function
to dodge a loop at import time is still a dependency. tests/test_import_direction.py asserts the
direction and that there is no cycle; bench/layout_metrics.py counts the cycles of any checkout.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path


def imports(package: str, root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """``{first-party package imported: {module file, ...}}`` for every module of ``package``."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted((root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in packages and top != package:
                    found[top].add(path.relative_to(root).as_posix())
    return found


def cycles(graph: dict[str, dict[str, set[str]]]) -> dict[str, list[str]]:
    """``{package: [hop, ...]}``: for each package on a cycle, a chain of imports back to itself."""
    found = {}
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, chain = stack.pop()
            if start in graph[node]:
                chain = [*chain, start]
                hops = zip(chain, chain[1:], strict=False)
                found[start] = [f"{a} -> {b} ({sorted(graph[a][b])[0]})" for a, b in hops]
                break
            for nxt in sorted(graph[node]):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*chain, nxt]))
    return found


def module_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """``{module: {first-party module it imports}}``; ``from pkg import sub`` counts as importing
    ``pkg.sub`` when that is a module."""
    files = {}
    for pkg in packages:
        for path in (root / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            files[name] = path
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def module_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found
