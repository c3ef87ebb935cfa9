"""Validation of a label submission (the page's POST /api/label body), before anything is written.

A body is JSON (what the page sends) or a URL-encoded form (``scores`` then holds the JSON text)::

    {"task_id": "...", "labeller": "alice", "skipped": false,
     "scores": {"<video id>": {"motion": 1..5, "structure": 1..5, "fidelity": 1..5, "alignment": 1..5}},
     "best": "<video id>", "worst": "<video id>"}

Rules: ``task_id`` names a task; ``labeller`` is 1..64 printable characters; a skip needs nothing else
(scores, best and worst are then stored as NULL). Otherwise every *playable* video of the task (its
file exists under the videos directory) has an integer 1..5 on each of the four rubric dimensions, a
missing video has none, ``best`` and ``worst`` are two different playable videos, and a task with
fewer than two playable videos can only be skipped. The first broken rule raises ``BadField`` naming
the field (``scores.<video id>.motion``, ``best``, ...), which the app returns as a 400.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from evaluation.preferences import RUBRIC

MAX_LABELLER = 64


class BadField(ValueError):
    """A submission field is missing or wrong; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class Submission:
    task_id: str
    labeller: str
    skipped: bool
    scores: dict[str, dict[str, int]] | None
    best: str | None
    worst: str | None


def parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """The body as a dict: JSON, or a URL-encoded form (one value per key)."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
        except (UnicodeDecodeError, ValueError) as e:
            raise BadField("body", f"not a valid URL-encoded form ({e})") from None
        body: dict[str, Any] = {k: v[-1] for k, v in form.items()}
        if "scores" in body and body["scores"] != "":
            try:
                body["scores"] = json.loads(body["scores"])
            except json.JSONDecodeError as e:
                raise BadField("scores", f"not JSON ({e})") from None
        return body
    if ctype not in ("application/json", ""):
        raise BadField("body", f"content type {ctype!r}: send application/json or a URL-encoded form")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadField("body", f"not JSON ({e})") from None
    if not isinstance(body, dict):
        raise BadField("body", "expected a JSON object")
    return body


def parse_labeller(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadField("labeller", "missing: give your name (?labeller=NAME or the name field)")
    name = value.strip()
    if len(name) > MAX_LABELLER or not name.isprintable():
        raise BadField("labeller", f"at most {MAX_LABELLER} printable characters")
    return name


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None or value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise BadField("skipped", f"expected true or false, got {value!r}")


def _score(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadField(field, f"expected an integer 1..5, got {value!r}")
    try:
        n = int(value)
    except ValueError:
        raise BadField(field, f"expected an integer 1..5, got {value!r}") from None
    if not 1 <= n <= 5:
        raise BadField(field, f"expected an integer 1..5, got {n}")
    return n


def _pick(body: dict[str, Any], name: str, playable: list[str]) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadField(name, f"missing: mark the {name} video")
    if value not in playable:
        raise BadField(name, f"{value!r} is not a playable video of this task")
    return value


def validate(body: dict[str, Any], get_task: Callable[[str], dict[str, Any] | None],
             playable: Callable[[dict[str, Any]], Collection[str]]) -> tuple[Submission, dict[str, Any]]:
    """Check ``body`` against its task; returns the submission and the task row.

    Args:
        get_task: task id -> task row (None when unknown).
        playable: task row -> the ids of its videos whose files exist.
    """
    tid = body.get("task_id")
    if not isinstance(tid, str) or not tid:
        raise BadField("task_id", "missing")
    task = get_task(tid)
    if task is None:
        raise BadField("task_id", f"no task {tid!r}")
    labeller = parse_labeller(body.get("labeller"))
    if _flag(body.get("skipped")):
        return Submission(tid, labeller, True, None, None, None), task
    ok = [v for v in task["video_ids"] if v in set(playable(task))]
    if len(ok) < 2:
        raise BadField("skipped", f"only {len(ok)} of the task's videos can be played: skip this task")
    scores = body.get("scores")
    if not isinstance(scores, dict):
        raise BadField("scores", "missing: expected {video id: {dimension: 1..5}}")
    for vid in scores:
        if vid not in task["video_ids"]:
            raise BadField(f"scores.{vid}", "not a video of this task")
        if vid not in ok:
            raise BadField(f"scores.{vid}", "this video's file is missing: it cannot be scored")
    clean: dict[str, dict[str, int]] = {}
    for vid in ok:
        dims = scores.get(vid)
        if not isinstance(dims, dict):
            raise BadField(f"scores.{vid}", "missing: score every playable video")
        extra = sorted(set(dims) - set(RUBRIC))
        if extra:
            raise BadField(f"scores.{vid}.{extra[0]}", f"unknown dimension (expected {', '.join(RUBRIC)})")
        clean[vid] = {}
        for d in RUBRIC:
            if d not in dims:
                raise BadField(f"scores.{vid}.{d}", "missing")
            clean[vid][d] = _score(f"scores.{vid}.{d}", dims[d])
    best, worst = _pick(body, "best", ok), _pick(body, "worst", ok)
    if best == worst:
        raise BadField("worst", "the worst video must differ from the best")
    return Submission(tid, labeller, False, clean, best, worst), task
