"""Evaluation prompt suites: YAML files of prompts grouped by dimension, validated at load.

A suite file (``evaluation/suites/default.yaml`` ships with the package)::

    name: default
    description: free text
    prompts:
      - id: pf-colour-left-right-en      # unique, [A-Za-z0-9._-]+ (used in file names)
        dimension: prompt_following      # one of DIMENSIONS
        lang: en                         # en | zh (zh text must hold CJK characters, en none)
        text: a girl in red runs on the left, a boy in blue rides on the right
      - id: ms-chef-en
        dimension: multi_shot
        lang: en
        text: a chef cooks a meal              # the story as a whole
        shots: [a chef chops onions, close-up of a pan sizzling]   # 2+ shots; multi_shot only

``load_suite(name_or_path)`` takes a built-in suite name (``default``, ``tiny``) or a file path and
raises ``SuiteError`` listing every problem (file, prompt index and id, field), not only the first.
``Suite.sha`` is the sha256 of the file's bytes: what ``eval_runs.suite_sha`` records, so two runs
can be compared only when they scored the same prompts.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DIMENSIONS = ("prompt_following", "motion", "visual_quality", "temporal_coherence", "multi_shot")
LANGS = ("en", "zh")
_ID = re.compile(r"^[A-Za-z0-9._-]{1,80}$")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_PROMPT_KEYS = {"id", "dimension", "lang", "text", "shots", "tags"}
_SUITE_KEYS = {"name", "description", "prompts"}


class SuiteError(ValueError):
    """A suite file that cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class SuitePrompt:
    """One prompt of a suite; ``shots`` is non-empty only for multi-shot prompts."""

    id: str
    dimension: str
    lang: str
    text: str
    shots: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @property
    def texts(self) -> list[str]:
        """What is generated: each shot's prompt for a multi-shot prompt, else the text itself."""
        return list(self.shots) if self.shots else [self.text]


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    sha: str
    prompts: tuple[SuitePrompt, ...]
    description: str = ""
    dimensions: tuple[str, ...] = field(default=DIMENSIONS)

    def by_dimension(self) -> dict[str, list[SuitePrompt]]:
        """Prompts per dimension, in ``DIMENSIONS`` order (dimensions without prompts left out)."""
        out: dict[str, list[SuitePrompt]] = {}
        for d in DIMENSIONS:
            group = [p for p in self.prompts if p.dimension == d]
            if group:
                out[d] = group
        return out


def builtin_suites() -> list[str]:
    """Names of the suites shipped in ``evaluation/suites``."""
    root = importlib.resources.files("evaluation") / "suites"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def resolve_suite(name_or_path: str | Path) -> Path:
    """A suite file path: an existing file, else a built-in suite name.

    Raises:
        SuiteError: neither a file nor a built-in name.
    """
    p = Path(name_or_path)
    if p.is_file():
        return p
    name = str(name_or_path)
    if re.fullmatch(r"[A-Za-z0-9_-]+", name):
        builtin = importlib.resources.files("evaluation") / "suites" / f"{name}.yaml"
        if builtin.is_file():
            return Path(str(builtin))
    raise SuiteError(f"suite {name_or_path!r} is neither a file nor a built-in suite "
                     f"(built-in: {', '.join(builtin_suites())})")


def load_suite(name_or_path: str | Path) -> Suite:
    """Read and validate a suite (see the module docstring).

    Raises:
        SuiteError: unreadable YAML, or any invalid field (all problems in one message).
    """
    path = resolve_suite(name_or_path)
    raw = path.read_bytes()
    try:
        doc = yaml.safe_load(raw.decode("utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SuiteError(f"{path}: not valid UTF-8 YAML: {e}") from e
    prompts, errors = parse_suite(doc)
    if errors:
        raise SuiteError(f"{path}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    assert isinstance(doc, dict)
    return Suite(name=str(doc.get("name") or path.stem), path=str(path), sha=hashlib.sha256(raw).hexdigest(),
                 prompts=tuple(prompts), description=str(doc.get("description") or ""))


def parse_suite(doc: Any) -> tuple[list[SuitePrompt], list[str]]:
    """(prompts, errors) of a parsed YAML document; errors empty means valid."""
    if not isinstance(doc, dict):
        return [], [f"the file must be a mapping with a 'prompts' list, got {type(doc).__name__}"]
    errors = [f"unknown top-level key {k!r} (allowed: {sorted(_SUITE_KEYS)})" for k in doc
              if k not in _SUITE_KEYS]
    items = doc.get("prompts")
    if not isinstance(items, list) or not items:
        return [], errors + ["'prompts' must be a non-empty list"]
    prompts: list[SuitePrompt] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"prompts[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: must be a mapping, got {type(item).__name__}")
            continue
        if isinstance(item.get("id"), str):
            where += f" ({item['id']})"
        bad = _prompt_errors(item)
        errors += [f"{where}: {e}" for e in bad]
        pid = item.get("id")
        if isinstance(pid, str):
            if pid in seen:
                errors.append(f"{where}: duplicate id {pid!r} (also prompts[{seen[pid]}])")
            seen.setdefault(pid, i)
        if not bad:
            prompts.append(SuitePrompt(id=item["id"], dimension=item["dimension"], lang=item["lang"],
                                       text=item["text"].strip(),
                                       shots=tuple(s.strip() for s in item.get("shots") or ()),
                                       tags=tuple(item.get("tags") or ())))
    return prompts, errors


def _prompt_errors(item: dict[str, Any]) -> list[str]:
    errors = [f"unknown key {k!r} (allowed: {sorted(_PROMPT_KEYS)})" for k in item if k not in _PROMPT_KEYS]
    pid, dim, lang, text = (item.get(k) for k in ("id", "dimension", "lang", "text"))
    if not isinstance(pid, str) or not _ID.match(pid):
        errors.append(f"id must be 1-80 characters of [A-Za-z0-9._-], got {pid!r}")
    if dim not in DIMENSIONS:
        errors.append(f"dimension must be one of {', '.join(DIMENSIONS)}, got {dim!r}")
    if lang not in LANGS:
        errors.append(f"lang must be one of {', '.join(LANGS)}, got {lang!r}")
    if not isinstance(text, str) or not text.strip():
        errors.append("text must be a non-empty string")
    shots = item.get("shots")
    if shots is not None and (not isinstance(shots, list) or len(shots) < 2
                              or not all(isinstance(s, str) and s.strip() for s in shots)):
        errors.append("shots must be a list of 2 or more non-empty strings")
        shots = None
    if dim == "multi_shot" and not item.get("shots"):
        errors.append("a multi_shot prompt needs a 'shots' list (2 or more shot prompts)")
    if item.get("shots") and dim in DIMENSIONS and dim != "multi_shot":
        errors.append(f"'shots' is only for the multi_shot dimension, not {dim}")
    tags = item.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        errors.append("tags must be a list of strings")
    if lang in LANGS and isinstance(text, str):
        for j, t in enumerate([text, *(shots or [])]):
            has_cjk = bool(_CJK.search(t))
            what = "text" if j == 0 else f"shots[{j - 1}]"
            if lang == "zh" and not has_cjk:
                errors.append(f"{what} is marked lang zh but has no Chinese characters: {t!r}")
            if lang == "en" and has_cjk:
                errors.append(f"{what} is marked lang en but has Chinese characters: {t!r}")
    return errors
