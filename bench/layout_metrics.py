"""The layout's figures for a checkout: lines per package, CLI options, config definition sites and
import cycles. ``python bench/layout_metrics.py [--root DIR] [--label NAME] [--json FILE]``.

Run from this checkout against any other tree (``--root``: e.g. a ``git worktree`` of an older
commit); with ``--json`` the figures are stored under ``--label`` in FILE (bench/record.py
provenance; other labels already in the file are kept), so a before and an after sit side by side;
``--markdown FILE`` prints their table (bench/README.md).

Definitions (all for the tree under ``--root``):

packages
    The top-level directories holding an ``__init__.py``, plus ``tests/``.
lines
    Non-blank lines of the ``*.py`` files of each package (``tests/`` separately). For ``vidloom/``
    also split into the CLI (``cli*.py``, ``__init__``, ``__main__``), ``bench_*.py`` and the rest.
cli
    ``vidloom.cli.build_parser()`` is imported from the tree (in a subprocess, the tree first on
    ``sys.path``) and its argparse tree walked. A leaf command is a parser with no sub-commands
    (aliases of one parser count once). ``options``: the optional arguments of each leaf (``-h`` aside),
    summed over the leaves; ``option_strings``: their spellings (``-o`` and ``--out`` are two);
    ``positionals`` likewise; ``distinct_options``: distinct long spellings across all leaves;
    ``global_options``: the top-level parser's own. ``current_leaf_commands``/``current_options``
    leave out the leaves under a command whose help says "deprecated" (old names kept as aliases
    for one release; listed in ``deprecated_leaf_commands``).
config
    Every dataclass defined in the tree's library packages (not tests or bench) is imported and
    read with ``dataclasses.fields``. A *config class* is one whose name ends in ``Config``; a
    *stage class* is a dataclass subclass of ``pipelines.stage.Stage``. A *definition site* is a
    field a class declares itself (its own annotation, not inherited), ``init=True``, not
    underscore-private. ``config_sites``/``stage_sites``: the sites in config / stage classes.
    ``mirrored``: stage sites whose name is also a field of the config class that shares the most
    field names with that stage (at least two: the section it mirrors); ``mirrored_same_default``:
    those whose default value equals the config field's. ``repeated``: sites whose (name,
    default value) pair is also declared by another config or stage class (any class, mirrors
    included). ``trainer_knobs``: keyword parameters with a default in ``__init__`` of classes named
    ``*Trainer`` (post-training knobs held as constructor arguments), ``trainer_classes`` their count.
imports
    bench/import_graph.py over the tree's packages (``tests/`` excluded), every import counted,
    function-local ones included. ``package_cycles``: strongly connected groups of packages (more
    than one), ``packages_on_cycles``; ``module_cycles``: strongly connected groups of modules,
    ``modules_on_cycles``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import import_graph
from bench import record as bench_record

REPO = Path(__file__).resolve().parent.parent
LIBRARY_EXCLUDE = ("tests", "bench")  # not searched for config classes


def packages(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if (p / "__init__.py").is_file() and p.name != "tests")


def nonblank(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def lines(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pkg in [*packages(root), "tests"]:
        if (root / pkg).is_dir():
            out[pkg] = sum(nonblank(p) for p in (root / pkg).rglob("*.py"))
    out["total_without_tests"] = sum(v for k, v in out.items() if k != "tests")
    split = {"cli": 0, "bench_": 0, "other": 0}
    for p in (root / "vidloom").glob("*.py"):
        kind = ("cli" if p.stem.startswith("cli") or p.stem in ("__init__", "__main__")
                else "bench_" if p.stem.startswith("bench") else "other")
        split[kind] += nonblank(p)
    out["vidloom_split"] = split
    return out


def imports(root: Path) -> dict[str, Any]:
    names = tuple(packages(root))
    pkg_graph = {p: set(import_graph.imports(p, root, names)) for p in names}
    pkg_groups = import_graph.module_cycles(pkg_graph)
    mod_groups = import_graph.module_cycles(import_graph.module_graph(root, names))
    return {"packages": list(names),
            "package_cycles": len(pkg_groups), "packages_on_cycles": sorted(p for g in pkg_groups for p in g),
            "module_cycles": len(mod_groups), "modules_on_cycles": sum(len(g) for g in mod_groups),
            "module_cycle_groups": mod_groups}


# Run inside the tree (its packages first on sys.path, this checkout's taken off): prints JSON.
PROBE = r'''
import argparse, dataclasses, importlib, inspect, json, pkgutil, sys, warnings
from pathlib import Path
root, repo, exclude = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve(), set(sys.argv[3].split(","))
sys.path[:] = [str(root)] + [p for p in sys.path if p and Path(p).resolve() not in (repo, root)]
# not this checkout's packages through its editable install
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
warnings.simplefilter("ignore")
failed = []

def load(name):
    mod = importlib.import_module(name)
    if not Path(mod.__file__).resolve().is_relative_to(root):
        raise RuntimeError(f"{name} was imported from {mod.__file__}, not from {root}")
    return mod

def cli():
    top = load("vidloom.cli").build_parser()
    leaves, seen, old = [], set(), set()
    def walk(p, path, deprecated):
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            if id(p) not in seen:
                seen.add(id(p)); leaves.append((" ".join(path), p))
                if deprecated:
                    old.add(" ".join(path))
            return
        for a in subs:
            helps = {c.dest: (c.help or "").lower() for c in a._choices_actions}
            for name, child in a.choices.items():
                walk(child, path + [name], deprecated or "deprecated" in helps.get(name, ""))
    walk(top, [], False)
    def opts(p):
        return [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    per = {name: len(opts(p)) for name, p in leaves if p is not top}
    strings = sum(len(a.option_strings) for name, p in leaves if p is not top for a in opts(p))
    pos = sum(1 for name, p in leaves if p is not top for a in p._actions if not a.option_strings)
    longs = {max(a.option_strings, key=len) for name, p in leaves if p is not top for a in opts(p)}
    current = {k: v for k, v in per.items() if k not in old}
    return {"leaf_commands": len(per), "options": sum(per.values()), "option_strings": strings,
            "positionals": pos, "distinct_options": len(longs), "global_options": len(opts(top)),
            "current_leaf_commands": len(current), "current_options": sum(current.values()),
            "deprecated_leaf_commands": sorted(old), "per_command": dict(sorted(per.items()))}

def value(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        try:
            return f.default_factory()
        except Exception:
            return "<factory>"
    return "<required>"

def config():
    classes = {}
    tops = sorted(d.name for d in root.iterdir() if (d / "__init__.py").is_file() and d.name not in exclude)
    for pkg in tops:
        mods = [pkg] + [m.name for m in pkgutil.walk_packages([str(root / pkg)], pkg + ".")]
        for name in mods:
            try:
                mod = load(name)
            except Exception as e:
                failed.append(f"{name}: {type(e).__name__}: {e}"[:200])
                continue
            for obj in vars(mod).values():
                if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__module__ == name:
                    classes[f"{name}.{obj.__qualname__}"] = obj
    try:
        from pipelines.stage import Stage
    except Exception:
        Stage = None
    def own(cls):
        ann = cls.__dict__.get("__annotations__", {})
        return [f for f in dataclasses.fields(cls) if f.name in ann and f.init and not f.name.startswith("_")]
    configs = {k: c for k, c in classes.items() if c.__name__.endswith("Config")}
    stages = {k: c for k, c in classes.items() if Stage is not None and issubclass(c, Stage)}
    sites = [(k, f.name, repr(value(f))) for k, c in {**configs, **stages}.items() for f in own(c)]
    mirrored = same = 0
    pairs = {}
    def leaves(cls):  # a field holding a whole section is composition, not a repeated value
        return {f.name: f for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(value(f))}
    for k, s in stages.items():
        names = {f.name: f for f in own(s)}
        best = max(configs.items(), key=lambda kc: len(names.keys() & leaves(kc[1]).keys()), default=None)
        if best is None:
            continue
        cfields = leaves(best[1])
        shared = names.keys() & cfields.keys()
        if len(shared) < 2:
            continue
        pairs[k] = [best[0], len(shared)]
        mirrored += len(shared)
        same += sum(repr(value(names[n])) == repr(value(cfields[n])) for n in shared)
    count = {}
    for k, n, v in sites:
        count.setdefault((n, v), set()).add(k)
    repeated = sum(1 for k, n, v in sites if len(count[(n, v)]) > 1)
    knobs, trainers = 0, 0
    for name, mod in sorted(sys.modules.items()):
        if mod is None or name.split(".")[0] not in tops:
            continue
        for obj in list(vars(mod).values()):
            if inspect.isclass(obj) and obj.__name__.endswith("Trainer") and obj.__module__ == name:
                trainers += 1
                init = obj.__dict__.get("__init__")
                if init is not None:
                    params = inspect.signature(init).parameters.values()
                    knobs += sum(1 for a in params if a.default is not inspect.Parameter.empty)
    return {"config_classes": len(configs), "stage_classes": len(stages),
            "config_sites": sum(len(own(c)) for c in configs.values()),
            "stage_sites": sum(len(own(c)) for c in stages.values()),
            "mirrored": mirrored, "mirrored_same_default": same, "repeated": repeated,
            "trainer_classes": trainers, "trainer_knobs": knobs, "mirror_pairs": pairs,
            "modules_not_importable": failed}

print(json.dumps({"cli": cli(), "config": config()}))
'''


def probe(root: Path) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-c", PROBE, str(root), str(REPO), ",".join(LIBRARY_EXCLUDE)],
                         capture_output=True, text=True, cwd=root, timeout=900, check=False,
                         env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                              "RAY_USAGE_STATS_ENABLED": "0", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                              "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    if res.returncode != 0:
        raise RuntimeError(f"probing {root} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def git_commit(root: Path) -> str:
    res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=root, check=False)
    return res.stdout.strip()


def measure(root: Path) -> dict[str, Any]:
    return {"root": str(root), "commit": git_commit(root), "lines": lines(root), **probe(root),
            "imports": imports(root)}


def summary(label: str, m: dict[str, Any]) -> str:
    c, k, i, ln = m["cli"], m["config"], m["imports"], m["lines"]
    per_pkg = ", ".join(f"{p} {n}" for p, n in ln.items() if isinstance(n, int))
    return (f"{label} ({m['commit'][:9]}): lines {per_pkg}; vidloom/ {ln['vidloom_split']}\n"
            f"  CLI: {c['leaf_commands']} leaf commands, {c['options']} options ({c['option_strings']} "
            f"spellings, {c['distinct_options']} distinct), {c['positionals']} positionals; without the "
            f"deprecated aliases {c['current_leaf_commands']} leaf commands, {c['current_options']} options\n"
            f"  config: {k['config_sites']} sites in {k['config_classes']} config classes, "
            f"{k['stage_sites']} in {k['stage_classes']} stage classes; {k['mirrored']} mirrored "
            f"({k['mirrored_same_default']} same default), {k['repeated']} (name, default) repeated; "
            f"{k['trainer_knobs']} knobs in {k['trainer_classes']} trainer constructors\n"
            f"  imports: {i['package_cycles']} package cycles {i['packages_on_cycles']}, "
            f"{i['module_cycles']} module cycles ({i['modules_on_cycles']} modules)")


PACKAGE_ROWS = ("curation", "pipelines", "captioner", "models", "training", "evaluation", "flows", "vidloom",
                "bench", "samplegen")


def table(runs: dict[str, Any], before: str = "before", after: str = "after") -> str:
    """The before/after table of bench/README.md, from a results file's ``runs``."""
    b, a = runs[before], runs[after]

    def both(f: Any) -> str:
        return f"| {f(b)} | {f(a)} |"

    def split(m: dict[str, Any]) -> str:
        v = m["lines"]["vidloom_split"]
        return f"{v['cli']} / {v['bench_']} / {v['other']}"

    rows = [f"| `{p}/` " + both(lambda m, p=p: m["lines"].get(p, 0)) for p in PACKAGE_ROWS]
    rows += [
        "| all packages (no tests) " + both(lambda m: m["lines"]["total_without_tests"]),
        "| `tests/` " + both(lambda m: m["lines"]["tests"]),
        "| `vidloom/`: CLI / `bench_*.py` / other " + both(split),
        "| CLI leaf commands (without deprecated aliases) "
        + both(lambda m: f"{m['cli']['leaf_commands']} ({m['cli']['current_leaf_commands']})"),
        "| CLI options over the leaves (without deprecated aliases) "
        + both(lambda m: f"{m['cli']['options']} ({m['cli']['current_options']})"),
        "| config fields defined in config classes "
        + both(lambda m: f"{m['config']['config_sites']} in {m['config']['config_classes']}"),
        "| fields defined in stage classes "
        + both(lambda m: f"{m['config']['stage_sites']} in {m['config']['stage_classes']}"),
        "| stage fields mirroring a config field (same default) "
        + both(lambda m: f"{m['config']['mirrored']} ({m['config']['mirrored_same_default']})"),
        "| (name, default) pairs declared by more than one class " + both(lambda m: m["config"]["repeated"]),
        "| defaulted `__init__` parameters of `*Trainer` classes "
        + both(lambda m: f"{m['config']['trainer_knobs']} in {m['config']['trainer_classes']}"),
        "| import cycles between packages (packages on them) "
        + both(lambda m: f"{m['imports']['package_cycles']} ({len(m['imports']['packages_on_cycles'])})"),
        "| import cycles between modules (modules on them) "
        + both(lambda m: f"{m['imports']['module_cycles']} ({m['imports']['modules_on_cycles']})"),
    ]
    return "| figure | before | after |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=REPO, help="the tree to measure (default: this checkout)")
    p.add_argument("--label", default="after", help="the key the figures are stored under")
    p.add_argument("--json", type=Path, help="results file (figures of other labels in it are kept)")
    p.add_argument("--markdown", type=Path, metavar="RESULTS",
                   help="print the before/after table of bench/README.md from RESULTS and exit")
    args = p.parse_args(argv)
    if args.markdown:
        print(table(json.loads(args.markdown.read_text(encoding="utf-8"))["runs"]), end="")
        return 0
    root = args.root.resolve()
    m = measure(root)
    print(summary(args.label, m))
    if args.json:
        old = json.loads(args.json.read_text(encoding="utf-8")) if args.json.is_file() else {}
        record = bench_record.provenance("python bench/layout_metrics.py", argv, "n/a", 0)
        run = {"command": record["command"], "date": record["date"], **m}
        runs = {**old.get("runs", {}), args.label: run}
        bench_record.write_result(args.json, record, {"runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
