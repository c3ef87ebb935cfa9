"""``vidloom annotate make-tasks``: labelling tasks from batch-generation indexes.

An index is ``DIR/index.jsonl`` as ``vidloom generate --prompts FILE --out DIR``
(training/inference/generate_batch.py)
or ``vidloom eval`` writes it: one JSON summary per video with at least ``path`` and ``prompt``. Several
seeds or checkpoints per prompt means several indexes (or one with repeated prompts); videos are
grouped by prompt text across all of them and each group is cut into tasks of 2..``per_task`` videos.

- **Video ids.** The summary's ``video_id`` when present (the eval harness's ids), else the video's
  path relative to the videos directory (``/``-separated). ``video_paths`` are relative to that
  directory, which ``annotate serve --videos`` must be given. A path in an index is tried as given
  (absolute, or relative to the current directory), then relative to the index's directory, then as
  the file name inside it; a file found nowhere is still added, at the path the index gives relative
  to its directory (the page shows it as missing).
- **Mixing sources.** Within a prompt the videos are interleaved index by index before cutting, so a
  task compares checkpoints (or seeds) rather than one index's videos among themselves; the order
  inside a task is then shuffled (seeded by the task id), so position says nothing about the source.
- **Sizes.** ``n`` videos become ceil(n / per_task) tasks of balanced size; with ``per_task`` = 2 and
  odd ``n`` the last video is paired with the group's first.
- **Idempotent.** A video already in a task of the same prompt is not used again, so a rerun adds
  nothing; new videos form new tasks (a lone new video is paired with one already in a task).
  ``task_id`` is 16 hex digits of sha256(prompt, sorted video ids).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

from evaluation import preferences


@dataclass
class Video:
    video_id: str
    rel_path: str
    prompt: str
    source: str
    exists: bool


@dataclass
class MakeTasksResult:
    added: int = 0
    tasks: list[dict[str, Any]] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    lone: list[str] = field(default_factory=list)  # prompts with a single video: nothing to compare


def read_index(path: str | Path) -> list[dict[str, Any]]:
    """The summaries of an ``index.jsonl`` (blank lines skipped).

    Raises:
        ValueError: a line is not a JSON object with a string ``path`` and ``prompt`` (names the line).
    """
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("path"), str) or not isinstance(
                doc.get("prompt"), str):
            raise ValueError(f"{path}:{n}: expected an object with string 'path' and 'prompt'")
        out.append(doc)
    return out


def _locate(path: str, index: Path) -> Path:
    p = Path(path)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, index.parent / p]
    candidates.append(index.parent / p.name)
    for c in candidates:
        if c.is_file():
            return c.resolve()
    return (p if p.is_absolute() else index.parent / p).resolve()  # missing: where the index says


def default_videos_dir(indexes: Sequence[str | Path]) -> Path:
    """The deepest directory holding every index (what ``serve --videos`` gets by default)."""
    return Path(os.path.commonpath([str(Path(i).resolve().parent) for i in indexes]))


def collect_videos(indexes: Sequence[str | Path], videos_dir: str | Path) -> list[Video]:
    """Every video of the indexes, once per id, in index order.

    Raises:
        ValueError: a video lies outside ``videos_dir`` (the page could not serve it).
    """
    root = Path(videos_dir).resolve()
    seen: set[str] = set()
    out = []
    for index in indexes:
        index = Path(index)
        for doc in read_index(index):
            path = _locate(doc["path"], index)
            if not path.is_relative_to(root):
                raise ValueError(f"{doc['path']} (in {index}) is not under the videos directory {root}: "
                                 "pass --videos with a directory that holds every video")
            rel = path.relative_to(root).as_posix()
            vid = str(doc.get("video_id") or rel)
            if vid in seen:
                continue
            seen.add(vid)
            out.append(Video(vid, rel, doc["prompt"], str(index), path.is_file()))
    return out


def _interleave(videos: list[Video]) -> list[Video]:
    by_source: dict[str, list[Video]] = {}
    for v in videos:
        by_source.setdefault(v.source, []).append(v)
    return [v for row in zip_longest(*by_source.values()) for v in row if v is not None]


def _chunks(videos: list[Video], per_task: int) -> list[list[Video]]:
    n_tasks = math.ceil(len(videos) / per_task)
    size, extra = divmod(len(videos), n_tasks)
    out, i = [], 0
    for t in range(n_tasks):
        k = size + (t < extra)
        out.append(videos[i:i + k])
        i += k
    if len(out[-1]) == 1:
        out[-1].append(videos[0])
    return out


def task_id(prompt: str, video_ids: Sequence[str]) -> str:
    doc = json.dumps([prompt, sorted(video_ids)], ensure_ascii=False)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _task(prompt: str, group: list[Video]) -> dict[str, Any]:
    tid = task_id(prompt, [v.video_id for v in group])
    order = list(group)
    random.Random(tid).shuffle(order)
    return {"task_id": tid, "prompt": prompt, "video_ids": [v.video_id for v in order],
            "video_paths": [v.rel_path for v in order],
            "source": ", ".join(sorted({v.source for v in order}))}


def plan_tasks(videos: Sequence[Video], per_task: int, existing: Sequence[dict[str, Any]] = ()
               ) -> tuple[list[dict[str, Any]], list[str]]:
    """New tasks for ``videos`` given the ``existing`` task rows; also the prompts left with one video."""
    if not 2 <= per_task <= 4:
        raise ValueError(f"--per-task must be 2..4, got {per_task}")
    used: dict[str, dict[str, Video]] = {}  # prompt -> id -> a video already in a task
    for t in existing:
        for vid, rel in zip(t["video_ids"], t["video_paths"], strict=True):
            used.setdefault(t["prompt"], {})[vid] = Video(vid, rel, t["prompt"], t.get("source") or "", True)
    groups: dict[str, list[Video]] = {}
    for v in videos:
        groups.setdefault(v.prompt, []).append(v)
    tasks, lone = [], []
    for prompt, group in groups.items():
        old = used.get(prompt, {})
        new = [v for v in group if v.video_id not in old]
        if not new:
            continue
        if len(new) == 1:
            if not old:
                lone.append(prompt)
                continue
            new.append(next(iter(old.values())))
            tasks.append(_task(prompt, new))
            continue
        tasks.extend(_task(prompt, chunk) for chunk in _chunks(_interleave(new), per_task))
    return tasks, lone


def make_tasks(indexes: Sequence[str | Path], db: str | Path, per_task: int = 4,
               videos_dir: str | Path | None = None) -> MakeTasksResult:
    """Add the tasks for ``indexes`` to ``db`` (see the module docstring); rerunning adds nothing."""
    if not indexes:
        raise ValueError("give at least one --index")
    root = Path(videos_dir) if videos_dir is not None else default_videos_dir(indexes)
    videos = collect_videos(indexes, root)
    tasks, lone = plan_tasks(videos, per_task, preferences.read_tasks(db))
    added = preferences.insert_tasks(db, tasks)
    return MakeTasksResult(added, tasks, [v.rel_path for v in videos if not v.exists], lone)
