"""Every Markdown file a module cites is in the repo, and every section it names is a heading there.

A docstring or comment that points to ``docs/architecture.md "Decode once"`` (or to a file that
was never committed) sends the next reader nowhere; this keeps the pointers true.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("curation", "pipelines", "captioner", "models", "training", "evaluation", "flows", "vidloom",
            "samplegen", "bench", "tests")
CITATION = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.md)(?: \"([^\"]+)\")?")


def citations(text: str) -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in CITATION.finditer(text)]


def headings(path: Path) -> set[str]:
    """A file's headings, lower-cased, each also by its text after the last ': ' (a heading such as
    '`vidloom bench curate --real DIR`: throughput on real footage' is cited by its description)."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out |= {title, title.rsplit(": ", 1)[-1]}
    return out


def broken(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """``'<file>: <citation>'`` for each cited .md file that is missing, or section it lacks. A bare
    name (``catalog.md``) is looked up beside the citing file, under docs/ and at the root."""
    out = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            if path.resolve() == Path(__file__).resolve():  # its own examples
                continue
            for name, section in citations(path.read_text(encoding="utf-8")):
                where = [root / name, path.parent / name, root / "docs" / name]
                target = next((p for p in where if p.is_file()), None)
                rel = path.relative_to(root).as_posix()
                if target is None:
                    out.append(f"{rel}: {name} is not in the repo")
                elif section and section.split(": ")[-1].lower() not in headings(target):
                    out.append(f"{rel}: {name} has no section {section!r}")
    return out


def test_cited_docs_and_sections_exist() -> None:
    assert broken() == []


def test_a_missing_file_or_section_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Here\n\n## `cmd`: what it does\n", encoding="utf-8")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        '"""See docs/a.md "Here", docs/a.md "A: Here", docs/a.md "What it does", a.md, DESIGN.md and '
        'docs/a.md "Gone"."""\n',
        encoding="utf-8")
    assert broken(tmp_path, ("pkg",)) == ["pkg/m.py: DESIGN.md is not in the repo",
                                           "pkg/m.py: docs/a.md has no section 'Gone'"]
