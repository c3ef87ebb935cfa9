"""Every benchmark figure the READMEs quote can be traced to a stored result (issue 14, section 6).

README.md, bench/README.md and the guides under docs/ cite ``bench/results/*.json`` files beside
their figures. These tests read the documents as they are and fail when a cited file is missing,
when a stored result does not say which command made it, when, on which machine, with which
versions, precision and threads (``bench/record.py``), when a figures table in the
benchmark sections cites no result, or when a table row shows no number that its cited results hold.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.record import REQUIRED

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "bench/README.md", "docs/data-engineers.md", "docs/trainers.md")
RESULTS = ROOT / "bench" / "results"
CITE = re.compile(r"bench/results/[\w./-]+?\.json")
DECIMAL = re.compile(r"(?<![\w.])-?\d[\d,]*\.\d+")


def text(doc: str) -> str:
    return (ROOT / doc).read_text(encoding="utf-8")


def section(doc: str, heading: str) -> str:
    """The text from ``heading`` (a markdown heading line) to the next heading of the same level."""
    body = text(doc)
    start = body.index(heading + "\n")
    level = heading.split(" ", 1)[0]
    nxt = re.search(rf"^{level} ", body[start + len(heading):], re.M)
    return body[start:start + len(heading) + (nxt.start() if nxt else len(body))]


def cited(body: str) -> set[str]:
    """Results files named outside fenced code (a command in a code block may write a new one)."""
    return set(CITE.findall(re.sub(r"^```.*?^```", "", body, flags=re.M | re.S)))


def blocks(body: str) -> Iterator[str]:
    """Paragraph groups: a new block starts at each line that opens with a bold title (``**...``)."""
    block: list[str] = []
    for line in body.splitlines():
        if line.startswith("**") and block:
            yield "\n".join(block)
            block = []
        block.append(line)
    if block:
        yield "\n".join(block)


def table_rows(block: str) -> list[str]:
    rows = [ln for ln in block.splitlines() if ln.startswith("|")]
    return [r for r in rows[2:] if not set(r) <= set("|-: ")]  # no header, no separator


def numbers(obj: object) -> Iterator[float]:
    """Every finite number in a JSON document (strings holding a number count too)."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        if math.isfinite(obj):
            yield float(obj)
    elif isinstance(obj, str):
        for m in DECIMAL.findall(obj):
            yield float(m.replace(",", ""))
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)


def shown(x: str, values: list[float]) -> bool:
    """Whether the figure ``x`` (as printed, e.g. '0.924', '1,034.5') is some stored value rounded to its
    decimals, as is or as a percentage."""
    d = len(x.split(".")[1])
    target, tol = float(x.replace(",", "")), 0.5 * 10**-d + 1e-9
    return any(abs(v - target) <= tol or abs(100 * v - target) <= tol for v in values)


BENCH_SECTIONS = (("bench/README.md", "## Figures"), ("docs/trainers.md", "## Post-training"),
                  ("bench/README.md", "## Measured here"))


def test_the_docs_cite_results() -> None:
    for doc in ("README.md", "bench/README.md"):  # the guides cite where they quote a figure
        assert cited(text(doc)), f"{doc} cites no bench/results file"


@pytest.mark.parametrize("rel", sorted(set().union(*(cited(text(d)) for d in DOCS))))
def test_every_cited_result_exists_and_says_where_it_came_from(rel: str) -> None:
    path = ROOT / rel
    assert path.is_file(), f"{rel} is cited but not stored"
    result = json.loads(path.read_text(encoding="utf-8"))
    missing = [k for k in REQUIRED if k not in result]
    assert not missing, f"{rel} lacks {missing}"
    assert isinstance(result["command"], str) and result["command"].split()[0] in ("vidloom", "python",
                                                                                  "python3", "bash"), rel
    assert re.match(r"\d{4}-\d\d-\d\d", result["date"]), (rel, result["date"])
    assert isinstance(result["machine"], dict) and result["machine"].get("cores"), (rel, result["machine"])
    assert "cpu_model" in result["machine"] and "gpu" in result["machine"], rel


def test_every_stored_result_is_cited() -> None:
    """A results file nobody cites is a figure's source that lost its figure (or never had one)."""
    stored = {p.relative_to(ROOT).as_posix() for p in RESULTS.rglob("*.json")}
    assert stored, "no results stored"
    orphans = stored - set().union(*(cited(text(d)) for d in DOCS))
    assert not orphans, f"stored but cited by no document: {sorted(orphans)}"


def fenced(block: str) -> str:
    return "\n".join(re.findall(r"^```[^\n]*\n(.*?)^```", block, flags=re.M | re.S))


@pytest.mark.parametrize(("doc", "heading"), BENCH_SECTIONS)
def test_every_figures_table_cites_its_result(doc: str, heading: str) -> None:
    """Each bold-titled block holding a table of figures, or a printed bench output in a code block,
    names the results file it comes from; every table row shows at least one decimal figure that the
    cited files hold."""
    body = section(doc, heading)
    assert cited(body), f"{doc} '{heading}' cites no bench/results file"
    for block in blocks(body):
        rows = [r for r in table_rows(block) if DECIMAL.search(r)]
        output = [ln for ln in fenced(block).splitlines()
                  if DECIMAL.search(ln) and not ln.lstrip().startswith(("vidloom ", "python", "bash "))]
        if not rows and not output:
            continue
        cites = cited(block)
        assert cites, f"{doc} '{heading}': figures that cite no bench/results file:\n{block[:300]}"
        values = [v for rel in cites if (ROOT / rel).is_file()
                  for v in numbers(json.loads((ROOT / rel).read_text(encoding="utf-8")))]
        for row in rows:
            assert any(shown(x, values) for x in DECIMAL.findall(row)), (
                f"{doc}: no figure of this row is in {sorted(cites)}: {row}")


def test_fixture_checks_are_not_quoted_as_measurements() -> None:
    """The post-training section separates mechanics checks on random-weight fixtures from figures
    measured on trained models; only the latter carry numbers, and they cite their result."""
    post = section("docs/trainers.md", "## Post-training")
    fixture = next((b for b in blocks(post) if b.startswith("**Mechanics checks")), None)
    measured = next((b for b in blocks(post) if b.startswith("**Measured on trained models")), None)
    assert fixture is not None and measured is not None, "post-training lacks its two labelled paragraphs"
    assert "random" in fixture and not DECIMAL.search(fixture.split("\n\n")[0]), fixture[:400]
    assert cited(measured), "the trained-model figures cite no result"


def bench_commands(lines: list[str]) -> set[str]:
    """Normalised benchmark command lines: ``vidloom bench ...`` / ``python bench/...`` with their
    arguments, the virtual-env prefix, variables and trailing comments dropped."""
    out = set()
    for ln in lines:
        ln = ln.split("#", 1)[0].replace("$(VENV)/bin/", "").replace("$(PY)", "python")
        ln = re.sub(r"^\s*PREFECT_HOME=(\$\$\([^)]*\)|\S+)\s+", "", ln)
        ln = ln.replace("$(BENCH_OUT)", "bench/results").strip()
        if ln.startswith(("vidloom bench ", "python bench/")):
            out.add(" ".join(ln.split()))
    return out


def test_make_bench_runs_what_the_readme_says() -> None:
    """The Makefile's ``bench`` recipe and bench/README.md's "Reproduce with make bench" block list the same
    commands, with the same result files."""
    make = (ROOT / "Makefile").read_text(encoding="utf-8").split("\nbench:", 1)[1]
    recipe = [ln for ln in make.splitlines()[1:] if ln.startswith("\t") or not ln.strip()]
    recipe = recipe[:next((i for i, ln in enumerate(recipe) if not ln.strip()), len(recipe))]
    bench = section("bench/README.md", "## Figures")
    fence = re.search(r"`make bench` runs:?\s*\n```bash\n(.*?)```", bench, re.S)
    assert fence, "bench/README.md 'Figures' lacks the block of what `make bench` runs"
    assert bench_commands(recipe) == bench_commands(fence.group(1).splitlines())
    assert len(bench_commands(recipe)) >= 2


def test_shown_reads_rounding_and_percentages() -> None:
    assert shown("0.924", [0.9242]) and shown("34.4%".rstrip("%"), [0.3441])
    assert shown("1,034.4", [1034.4]) and not shown("0.925", [0.9242])
