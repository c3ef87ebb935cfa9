"""The direction of imports between vidloom's packages (docs/architecture.md "Layout").

Every import counts, at the top of a module or inside a function: an import moved into a function
to dodge a loop at import time is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("curation", "pipelines", "captioner", "models", "training", "flows", "evaluation", "vidloom")


def imports(package: str, root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
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


def test_models_import_no_training_pipelines_or_captioner() -> None:
    edges = imports("models")
    bad = {pkg: sorted(edges[pkg]) for pkg in ("training", "pipelines", "captioner") if edges.get(pkg)}
    assert not bad, f"models/ must stand alone; these modules import {bad}"


def test_no_import_cycle_between_packages() -> None:
    found = cycles({pkg: imports(pkg) for pkg in PACKAGES})
    assert not found, "import cycles between packages:\n" + "\n".join(
        f"{pkg}: " + "; ".join(hops) for pkg, hops in found.items())


def test_the_checks_see_a_function_local_import_loop(tmp_path: Path) -> None:
    """Not vacuous: two packages importing each other (one inside a function) form a reported cycle."""
    for name, code in (("pkg_a", "def f():\n    import pkg_b.x\n"), ("pkg_b", "from pkg_a import f\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(code, encoding="utf-8")
    names = ("pkg_a", "pkg_b", "pkg_c")
    graph = {p: imports(p, tmp_path, names) for p in names if (tmp_path / p).is_dir()}
    assert graph == {"pkg_a": {"pkg_b": {"pkg_a/__init__.py"}}, "pkg_b": {"pkg_a": {"pkg_b/__init__.py"}}}
    assert sorted(cycles(graph)) == ["pkg_a", "pkg_b"]
    assert cycles({"a": {"b": {"a/x.py"}}, "b": {}}) == {}


def module_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
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


def test_no_import_loop_between_modules() -> None:
    """No module imports, at any depth and inside functions too, a module that imports it back."""
    assert module_cycles(module_graph()) == []


def test_module_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert module_cycles(graph) == [["a", "b", "c"]]
