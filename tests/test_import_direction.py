"""The direction of imports between vidloom's packages (docs/architecture.md "Layout").

Every import counts, at the top of a module or inside a function: an import moved into a function
to dodge a loop at import time is still a dependency (the graph: bench/import_graph.py).
"""

from __future__ import annotations

from pathlib import Path

from bench import import_graph
from bench.import_graph import cycles, module_cycles

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("curation", "pipelines", "captioner", "models", "training", "flows", "evaluation", "vidloom",
            "samplegen", "bench")


def imports(package: str, root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    return import_graph.imports(package, root, packages)


def module_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    return import_graph.module_graph(root, packages)


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


def test_no_import_loop_between_modules() -> None:
    """No module imports, at any depth and inside functions too, a module that imports it back."""
    assert module_cycles(module_graph()) == []


def test_module_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert module_cycles(graph) == [["a", "b", "c"]]
