"""``vidloom reward-train``: fit a learned reward head to the annotation page's labels.

Reads ``preferences`` and ``annotation_tasks`` from the DuckDB file, turns each labelled task into
``PreferencePair`` s (training/post/reward_labels.py: per head dimension from strict score differences,
ties broken by best/worst), loads each video once at the head's input size, trains with
``train_reward_model`` (Bradley-Terry), saves with ``save_head`` and reports the preference accuracy
on the training pairs and, with enough tasks, on held-out tasks (every ``holdout``-th task by id).

Videos are decoded from the start at their own frame rate (``training.data.decode_video``), ``frames``
frames (a shorter video repeats its last frame), resized to ``size`` x ``size``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from evaluation import preferences
from models.rewards.learned import (
    MotionHead,
    MotionHeadConfig,
    PreferenceHead,
    TextAlignmentConfig,
    TextAlignmentHead,
    save_head,
)
from training.data import decode_video
from training.post.reward_labels import DIMENSION_MAP, pairs_from_labels
from training.post.reward_trainer import preference_accuracy, train_reward_model


def load_clip(path: Path, frames: int, size: int) -> torch.Tensor:
    """[3, frames, size, size] in [-1, 1] from the start of the video at its own frame rate."""
    with av.open(str(path)) as c:
        rate = c.streams.video[0].average_rate
    fps = float(rate) if rate else 8.0
    clip = decode_video(path.read_bytes(), frames, fps, (size, size), 0.0, np.random.default_rng(0))
    if clip.shape[1] < frames:
        clip = torch.cat([clip, clip[:, -1:].expand(-1, frames - clip.shape[1], -1, -1)], dim=1)
    return clip


def build_head(kind: str, text_encoder: str = "auto", seed: int = 0) -> PreferenceHead:
    if kind == "text":
        return TextAlignmentHead(TextAlignmentConfig(text_encoder=text_encoder, seed=seed))  # type: ignore[arg-type]
    if kind == "motion":
        return MotionHead(MotionHeadConfig(dimensions=tuple(DIMENSION_MAP["motion"].values()), seed=seed))
    raise ValueError(f"--kind must be text or motion, got {kind!r}")


def _held_out(task_id: str, holdout: int) -> bool:
    return holdout > 0 and int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16) % holdout == 0


def reward_train(db: str | Path, videos: str | Path, out: str | Path, kind: str = "motion", steps: int = 200,
                 frames: int = 8, size: int = 32, lr: float = 1e-3, batch_size: int = 16, seed: int = 0,
                 holdout: int = 5, text_encoder: str = "auto") -> dict[str, Any]:
    """Train a ``kind`` head on the labels in ``db`` (videos under ``videos``), save it to ``out``.

    Returns a summary: pair counts, the training stats, "train_accuracy" and "val_accuracy" (dimension
    -> accuracy; None when no task is held out).

    Raises:
        ValueError: no label gives a pair on the head's dimensions.
    """
    root = Path(videos).resolve()
    paths: dict[str, Path] = {}
    for t in preferences.read_tasks(db):
        for vid, rel in zip(t["video_ids"], t["video_paths"], strict=True):
            paths.setdefault(vid, (root / rel).resolve())

    def load(vid: str) -> torch.Tensor | None:
        p = paths.get(vid)
        if p is None or not p.is_relative_to(root) or not p.is_file():
            return None
        return load_clip(p, frames, size)

    labels = preferences.read_preferences(db, include_skipped=False)
    n_tasks = len({lab["task_id"] for lab in labels})
    use_val = n_tasks >= 5 and holdout > 0
    train_l = [lab for lab in labels if not (use_val and _held_out(lab["task_id"], holdout))]
    val_l = [lab for lab in labels if use_val and _held_out(lab["task_id"], holdout)]
    dim_map = DIMENSION_MAP[kind] if kind in DIMENSION_MAP else {}
    head = build_head(kind, text_encoder, seed)
    train_pairs, stats = pairs_from_labels(train_l, dim_map, load)
    val_pairs, val_stats = pairs_from_labels(val_l, dim_map, load)
    if not train_pairs:
        raise ValueError(f"{db}: no labelled pair on {tuple(head.dimensions)} (labels: {len(labels)}, "
                         f"pairs lost to missing videos: {stats['dropped_missing']})")
    torch.manual_seed(seed)
    fit = train_reward_model(head, train_pairs, steps, lr=lr, seed=seed, batch_size=batch_size)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_head(head, str(out))
    return {"out": str(out), "kind": kind, "dimensions": list(head.dimensions), "mapping": dim_map,
            "labels": len(labels), "tasks": n_tasks, "train_pairs": len(train_pairs),
            "val_pairs": len(val_pairs),
            "dropped_missing": stats["dropped_missing"] + val_stats["dropped_missing"], "fit": fit,
            "train_accuracy": preference_accuracy(head, train_pairs),
            "val_accuracy": preference_accuracy(head, val_pairs) if val_pairs else None}
