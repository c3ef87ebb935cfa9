"""evaluation/suite.py: the shipped suites load and cover what the issue asks; bad files fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.suite import DIMENSIONS, SuiteError, builtin_suites, load_suite


def test_default_suite_covers_every_dimension_in_both_languages() -> None:
    suite = load_suite("default")
    assert suite.name == "default" and len(suite.sha) == 64
    groups = suite.by_dimension()
    assert list(groups) == list(DIMENSIONS)
    for dim, prompts in groups.items():
        assert {p.lang for p in prompts} == {"en", "zh"}, dim
    texts = {p.id: p.text for p in suite.prompts}
    assert "a girl in red runs on the left" in texts["pf-red-girl-blue-boy-en"]
    assert texts["pf-red-girl-blue-boy-zh"].startswith("左边一个穿红衣服的女孩在跑")
    multi = groups["multi_shot"]
    assert all(len(p.shots) >= 2 and p.texts == list(p.shots) for p in multi)
    assert all(p.texts == [p.text] for p in suite.prompts if p.dimension != "multi_shot")


def test_builtin_suites_by_name_and_by_path(tmp_path: Path) -> None:
    assert {"default", "tiny", "synthetic"} <= set(builtin_suites())
    tiny = load_suite("tiny")
    assert 3 <= len(tiny.prompts) <= 8 and set(tiny.by_dimension()) == set(DIMENSIONS)
    copy = tmp_path / "mine.yaml"
    copy.write_bytes(Path(tiny.path).read_bytes())
    same = load_suite(copy)
    assert same.sha == tiny.sha and same.prompts == tiny.prompts
    with pytest.raises(SuiteError, match="neither a file nor a built-in suite.*default"):
        load_suite("no-such-suite")


BAD = """\
name: broken
colour: blue
prompts:
  - id: a
    dimension: prompt_following
    lang: en
    text: a red ball
  - id: a
    dimension: motion
    lang: en
    text: a dog runs
  - id: b
    dimension: beauty
    lang: fr
    text: ''
  - id: c
    dimension: multi_shot
    lang: en
    text: a story
  - id: d
    dimension: motion
    lang: en
    text: a cat
    shots: [one, two]
  - id: e
    dimension: visual_quality
    lang: zh
    text: a sunset
  - id: f g
    dimension: motion
    lang: en
    text: 一只猫
    extra: 1
  - just a string
"""


def test_invalid_suite_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    msg = str(info.value)
    assert str(path) in msg
    for expected in ["unknown top-level key 'colour'",
                     "prompts[1] (a): duplicate id 'a' (also prompts[0])",
                     "prompts[2] (b): dimension must be one of", "prompts[2] (b): lang must be one of",
                     "prompts[2] (b): text must be a non-empty string",
                     "prompts[3] (c): a multi_shot prompt needs a 'shots' list",
                     "prompts[4] (d): 'shots' is only for the multi_shot dimension",
                     "prompts[5] (e): text is marked lang zh but has no Chinese characters",
                     "prompts[6] (f g): id must be", "prompts[6] (f g): unknown key 'extra'",
                     "prompts[6] (f g): text is marked lang en but has Chinese characters",
                     "prompts[7]: must be a mapping"]:
        assert expected in msg, expected


@pytest.mark.parametrize(("text", "match"), [
    ("prompts: []\n", "'prompts' must be a non-empty list"),
    ("- a\n- b\n", "must be a mapping with a 'prompts' list"),
    ("prompts: [\n", "not valid UTF-8 YAML"),
    ("prompts:\n  - {id: m, dimension: multi_shot, lang: en, text: x, shots: [only one]}\n",
     "shots must be a list of 2 or more"),
])
def test_malformed_suites(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SuiteError, match=match):
        load_suite(path)
