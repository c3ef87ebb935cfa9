"""Human preference labels (the annotation page's ``preferences`` rows) -> reward-training pairs.

Each labelled task gives, per pair of its videos (i < j in the task's order), the better one on each
head dimension:

1. **Scores.** A rubric dimension mapped to a head dimension (``DIMENSION_MAP``) labels the pair when
   the two 1-5 scores differ strictly (equal scores carry no preference).
2. **Best/worst.** The (best, worst) pair is labelled best-over-worst on every head dimension the
   scores left unlabelled (a tie is broken by the overall pick; where the scores do say something,
   they win, since they are the per-dimension judgement).

One ``PreferencePair`` per (label, video pair) with at least one label; several labellers of one task
give several pairs (Bradley-Terry then weighs agreement and cancels disagreement). Skipped labels
give nothing; a video whose file is missing is dropped from its pairs.

``DIMENSION_MAP`` (head kind -> rubric dimension -> head dimension), after models/rewards/learned.py:

- ``text``: ``TextAlignmentHead`` scores "text_alignment" <- rubric "alignment".
- ``motion``: ``MotionHead`` (frame differences) built with dimensions ("motion", "structure") <-
  rubric "motion" and "structure" (structural coherence is judged over time, which is what the head sees).

Rubric "fidelity" (per-frame sharpness) has no head yet; its scores reach the eval harness only
(evaluation/scoring.py ``human_scores``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import combinations
from typing import Any, Literal

import torch

from training.post.reward_trainer import PreferencePair

DIMENSION_MAP: dict[str, dict[str, str]] = {
    "text": {"alignment": "text_alignment"},
    "motion": {"motion": "motion", "structure": "structure"},
}

Side = Literal["a", "b"]


def label_pairs(label: Mapping[str, Any],
                dim_map: Mapping[str, str]) -> list[tuple[str, str, dict[str, Side]]]:
    """(video a id, video b id, {head dimension: "a" | "b"}) for one ``preferences`` row (see above)."""
    if label.get("skipped") or not label.get("scores"):
        return []
    scores: Mapping[str, Mapping[str, Any]] = label["scores"]
    vids = [v for v in label["video_ids"] if v in scores]
    out = []
    for a, b in combinations(vids, 2):
        labels: dict[str, Side] = {}
        for rubric, head_dim in dim_map.items():
            sa, sb = scores[a].get(rubric), scores[b].get(rubric)
            if isinstance(sa, int | float) and isinstance(sb, int | float) and sa != sb:
                labels[head_dim] = "a" if sa > sb else "b"
        pick = {label.get("best"), label.get("worst")}
        if pick == {a, b}:
            winner: Side = "a" if label["best"] == a else "b"
            for head_dim in dim_map.values():
                labels.setdefault(head_dim, winner)
        if labels:
            out.append((a, b, labels))
    return out


def pairs_from_labels(labels: Iterable[Mapping[str, Any]], dim_map: Mapping[str, str],
                      load_video: Callable[[str], torch.Tensor | None],
                      ) -> tuple[list[PreferencePair], dict[str, int]]:
    """``PreferencePair`` s for ``labels`` with videos from ``load_video(video_id)`` (None: missing file).

    Each video is loaded once. Returns the pairs and counts {"labels", "skipped", "pairs",
    "dropped_missing" (pairs lost to a missing video), "videos"}.
    """
    cache: dict[str, torch.Tensor | None] = {}

    def video(vid: str) -> torch.Tensor | None:
        if vid not in cache:
            cache[vid] = load_video(vid)
        return cache[vid]

    pairs: list[PreferencePair] = []
    stats = {"labels": 0, "skipped": 0, "pairs": 0, "dropped_missing": 0, "videos": 0}
    for lab in labels:
        if lab.get("skipped"):
            stats["skipped"] += 1
            continue
        stats["labels"] += 1
        for a, b, lab_dims in label_pairs(lab, dim_map):
            va, vb = video(a), video(b)
            if va is None or vb is None:
                stats["dropped_missing"] += 1
                continue
            pairs.append(PreferencePair(lab["prompt"], va, vb, lab_dims))
    stats["pairs"] = len(pairs)
    stats["videos"] = sum(v is not None for v in cache.values())
    return pairs, stats
