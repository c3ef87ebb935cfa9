"""bench/layout_metrics.py counts what its docstring defines, on a tiny tree built here."""

from __future__ import annotations

from pathlib import Path

from bench import layout_metrics

FILES = {
    "vidloom/__init__.py": "",
    "vidloom/cli.py": '''import argparse

def build_parser():
    top = argparse.ArgumentParser()
    top.add_argument("--log-level")
    sub = top.add_subparsers()
    a = sub.add_parser("a")
    a.add_argument("--x")
    a.add_argument("-y", "--yy")
    a.add_argument("path")
    b = sub.add_parser("b", help="the old way (deprecated: a)").add_subparsers()
    c = b.add_parser("c", aliases=["cc"])
    c.add_argument("--z")
    return top
''',
    "pipelines/__init__.py": "",
    "pipelines/stage.py": "class Stage:\n    pass\n",
    "pipelines/conf.py": '''from dataclasses import dataclass

@dataclass
class FooConfig:
    a: int = 1
    b: str = "x"

    c: float = 2.0
''',
    "pipelines/st.py": '''from dataclasses import dataclass, field

from pipelines.stage import Stage

@dataclass
class FooStage(Stage):
    a: int = 1
    b: str = "y"
    out: str = ""
    _p: int = field(default=0, init=False)
''',
    "pipelines/x.py": "import training.y\n",
    "training/__init__.py": '''class RLTrainer:
    def __init__(self, cfg, beta=0.1, steps=8):
        self.cfg = cfg
''',
    "training/y.py": "import pipelines.x\n",
    "tests/test_q.py": "def test_q():\n\n    q = 1\n",  # only its lines are counted
}


def test_the_figures_of_a_tiny_tree(tmp_path: Path) -> None:
    for rel, text in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    m = layout_metrics.measure(tmp_path)
    lines = m["lines"]
    assert (lines["tests"], lines["pipelines"], lines["vidloom_split"]["cli"]) == (2, 17, 13)
    cli = {k: v for k, v in m["cli"].items() if k != "per_command"}
    assert cli == {"leaf_commands": 2, "options": 3, "option_strings": 4, "positionals": 1,
                   "distinct_options": 3, "global_options": 1, "current_leaf_commands": 1,
                   "current_options": 2, "deprecated_leaf_commands": ["b c"]}
    assert m["cli"]["per_command"] == {"a": 2, "b c": 1}
    cfg = {k: v for k, v in m["config"].items() if k not in ("mirror_pairs", "modules_not_importable")}
    assert cfg == {"config_classes": 1, "stage_classes": 1, "config_sites": 3, "stage_sites": 3,
                   "mirrored": 2, "mirrored_same_default": 1, "repeated": 2,
                   "trainer_classes": 1, "trainer_knobs": 2}
    assert m["config"]["modules_not_importable"] == []
    imports = m["imports"]
    assert (imports["package_cycles"], imports["packages_on_cycles"]) == (1, ["pipelines", "training"])
    assert m["imports"]["module_cycle_groups"] == [["pipelines.x", "training.y"]]
    rows = layout_metrics.table({"before": m, "after": m}).splitlines()
    assert "| CLI options over the leaves (without deprecated aliases) | 3 (2) | 3 (2) |" in rows
    assert "| import cycles between modules (modules on them) | 1 (2) | 1 (2) |" in rows
