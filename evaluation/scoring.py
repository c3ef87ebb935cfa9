"""Scores of one evaluation video: the reward proxies, learned heads, data fidelity, and human labels.

Per video (a list of shot clips ``[3, T, H, W]`` in [-1, 1]: one clip, or one per shot of a
multi-shot prompt), ``Scorer.score`` returns metric -> value:

- ``motion``, ``stability``, ``aesthetic_proxy``: the built-in proxy rewards (models/rewards/proxies.py),
  each in [0, 1], averaged over the shots (stability is measured within a shot, never across a cut);
- ``text_alignment`` / ``motion_learned``: a trained head given by path (``--reward-head``; its kind
  is read from the file), each shot scored against its own prompt; unbounded, so not in the composite
  by default;
- ``cross_shot_consistency`` (multi-shot only): mean histogram intersection of the colour histograms
  (8 bins per RGB channel, all frames) of consecutive shots, in [0, 1]: a cheap stand-in for "the same
  characters and scene in every shot";
- ``data_psnr_db`` / ``data_fidelity`` (with reference clips): the PSNR of each shot against its
  nearest reference clip, reconstructed through the checkpoint's own VAE (so the score measures what
  the DiT produces, not the VAE), averaged over shots; ``data_fidelity = clamp(psnr / 40, 0, 1)``;
- ``composite``: the weighted mean of the metrics present with a nonzero weight (``DEFAULT_WEIGHTS``:
  the [0, 1] metrics above, weight 1 each). Which metrics are present depends on the prompt and the
  options only, never on the checkpoint, so composites of one prompt are comparable.

``human_scores`` reads the annotation page's ``preferences`` table (evaluation/preferences.py):
per video id, the mean 1-5 rubric score over the labellers (``human_motion``, ``human_structure``,
``human_fidelity``, ``human_alignment``), their mean ``human_mean`` and the number of labels
``human_n``, and ``human_best_worst`` from the best/worst picks. Skipped tasks are ignored. Human
metrics are kept out of the composite (only labelled videos have them) and get their own win-rate rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from models.rewards.base import Reward
from models.rewards.builtin import build_reward

PROXIES = ("motion", "stability", "aesthetic_proxy")
DEFAULT_WEIGHTS = {"motion": 1.0, "stability": 1.0, "aesthetic_proxy": 1.0, "data_fidelity": 1.0,
                   "cross_shot_consistency": 1.0}
HIST_BINS = 8
FIDELITY_DB = 40.0


def load_heads(paths: Sequence[str]) -> dict[str, Reward]:
    """Rewards from trained head files (``models.rewards.learned.save_head``), named by their kind:
    ``text_alignment`` or ``motion_learned``.

    Raises:
        FileNotFoundError: a path is not a file.
        ValueError: two heads of the same kind.
    """
    from models.rewards.learned import TextAlignmentHead, load_head

    out: dict[str, Reward] = {}
    for path in paths:
        head = load_head(path)
        kind = "text_alignment" if isinstance(head, TextAlignmentHead) else "motion_learned"
        if kind in out:
            raise ValueError(f"two {kind} heads given ({path}); pass one per kind")
        if kind == "text_alignment":
            out[kind] = build_reward("text_alignment", head=head.requires_grad_(False))
        else:
            out[kind] = build_reward("motion_learned", head=head.requires_grad_(False),
                                     dimension=head.dimensions[0])
    return out


def colour_histogram(video: torch.Tensor, bins: int = HIST_BINS) -> torch.Tensor:
    """[3, T, H, W] in [-1, 1] -> per-channel normalised histograms [3, bins] (each row sums to 1)."""
    x = ((video.float().clamp(-1, 1) + 1) / 2 * bins).long().clamp_max(bins - 1).flatten(1)
    hist = torch.zeros(3, bins)
    hist.scatter_add_(1, x, torch.ones_like(x, dtype=torch.float32))
    return hist / hist.sum(1, keepdim=True)


def cross_shot_consistency(shots: Sequence[torch.Tensor]) -> float:
    """Mean over consecutive shots of the colour-histogram intersection (mean over channels), [0, 1]."""
    hists = [colour_histogram(s) for s in shots]
    sims = [float(torch.minimum(a, b).sum(1).mean()) for a, b in zip(hists, hists[1:], strict=False)]
    return sum(sims) / len(sims)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2); 100 dB for identical ones."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 100.0 if mse <= 1e-10 else 10 * math.log10(4.0 / mse)


def nearest_psnr(video: torch.Tensor, references: torch.Tensor | Sequence[torch.Tensor]) -> float | None:
    """PSNR of ``video`` [3, T, H, W] against the closest of ``references`` (``[N, 3, T, H, W]`` or a
    list of clips) that has its shape (None when none has)."""
    same = [r for r in references if tuple(r.shape) == tuple(video.shape)]
    if not same:
        return None
    mse = torch.stack([((r - video.float()) ** 2).mean() for r in same])
    best = float(mse.min())
    return 100.0 if best <= 1e-10 else 10 * math.log10(4.0 / best)


class Scorer:
    """Scores videos (see the module docstring); rewards are built once and reused.

    Args:
        heads: trained reward head files (``load_heads``).
        weights: composite weights by metric (default ``DEFAULT_WEIGHTS``); unknown names are kept
            (e.g. ``text_alignment=0.1`` adds the head to the composite).
    """

    def __init__(self, heads: Sequence[str] = (), weights: dict[str, float] | None = None) -> None:
        self.rewards: dict[str, Reward] = {name: build_reward(name) for name in PROXIES}
        self.rewards.update(load_heads(heads))
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)

    @torch.no_grad()
    def score(self, shots: Sequence[torch.Tensor], texts: Sequence[str],
              references: torch.Tensor | Sequence[torch.Tensor] | None = None) -> dict[str, float]:
        """Metrics of one video: ``shots`` [3, T, H, W] each, ``texts`` their prompts."""
        if not shots or len(shots) != len(texts):
            raise ValueError(f"need one prompt per shot, got {len(shots)} shots and {len(texts)} prompts")
        out: dict[str, float] = {}
        for name, reward in self.rewards.items():
            vals = [float(reward(s[None].float(), [t])[0]) for s, t in zip(shots, texts, strict=True)]
            out[name] = sum(vals) / len(vals)
        if len(shots) > 1:
            out["cross_shot_consistency"] = cross_shot_consistency(shots)
        if references is not None and len(references):
            found = [nearest_psnr(s, references) for s in shots]
            vals = [v for v in found if v is not None]
            if vals:
                out["data_psnr_db"] = sum(vals) / len(vals)
                out["data_fidelity"] = min(1.0, max(0.0, out["data_psnr_db"] / FIDELITY_DB))
        out["composite"] = composite(out, self.weights)
        return out


def composite(metrics: dict[str, float], weights: dict[str, float]) -> float:
    """Weighted mean of the metrics present with a nonzero weight (nan when there is none)."""
    used = {k: w for k, w in weights.items() if w and k in metrics}
    total = sum(used.values())
    return sum(w * metrics[k] for k, w in used.items()) / total if total else float("nan")


def human_scores(db: str | Path, video_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """Human rubric scores per video id from the ``preferences`` table of ``db`` (none: {}).

    Read with ``evaluation.preferences.read_preferences`` (read-only, waits out a writer's lock);
    skipped tasks are ignored; only the ids in ``video_ids`` are returned. Per video: the mean of each
    1-5 rubric score over its labels (``human_<dimension>``), their mean ``human_mean``, the number of
    labels ``human_n`` and ``human_best_worst`` = (times picked best - times picked worst) / labels.
    """
    from evaluation.preferences import RUBRIC, read_preferences

    wanted = set(video_ids)
    acc: dict[str, dict[str, list[float]]] = {}
    picks: dict[str, list[float]] = {}
    for row in read_preferences(db, include_skipped=False):
        for vid, dims in (row.get("scores") or {}).items():
            if vid not in wanted or not isinstance(dims, dict):
                continue
            per = acc.setdefault(vid, {d: [] for d in RUBRIC})
            for d in RUBRIC:
                v = dims.get(d)
                if isinstance(v, int | float) and 1 <= v <= 5:
                    per[d].append(float(v))
            picks.setdefault(vid, []).append(float(row.get("best") == vid) - float(row.get("worst") == vid))
    out: dict[str, dict[str, float]] = {}
    for vid, per in acc.items():
        m = {f"human_{d}": sum(v) / len(v) for d, v in per.items() if v}
        if m:
            m["human_mean"] = sum(m.values()) / len(m)
            m["human_n"] = float(len(picks[vid]))
            m["human_best_worst"] = sum(picks[vid]) / len(picks[vid])
            out[vid] = m
    return out
