"""Reward-model training on preference pairs (Seedance 1.0, §4.1: reward models learned from
best/worst annotations per dimension, then used for RLHF and retrained on new samples).

A ``PreferencePair`` holds one prompt, two videos and, per dimension, which of the two is better.
A head (``models.rewards.learned``: ``dimensions`` + ``forward(video, prompts) -> [B, D]``) is fitted
with the Bradley-Terry loss, per dimension d that the pair labels and the head scores:

    L = mean over (pair, d) of -log sigmoid(r_d(best) - r_d(worst))

``pairs_from_rewards`` labels pairs from given reward functions (e.g. a held-out reward, or a
composite's terms), so an RLHF round can retrain the reward heads on its own samples.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import torch
import torch.nn.functional as F

from models.rewards.base import Reward
from models.rewards.learned import PreferenceHead


@dataclass
class PreferencePair:
    """Two videos for one prompt and, per dimension, the better one.

    Attributes:
        prompt: the prompt both videos were generated for.
        video_a, video_b: [3, T, H, W] in [-1, 1], the same shape.
        labels: dimension -> "a" | "b" (the better video for that dimension).
    """

    prompt: str
    video_a: torch.Tensor
    video_b: torch.Tensor
    labels: dict[str, Literal["a", "b"]]

    def __post_init__(self) -> None:
        bad = {d: v for d, v in self.labels.items() if v not in ("a", "b")}
        if bad:
            raise ValueError(f"labels must be 'a' or 'b', got {bad}")


def _batch(head: PreferenceHead, pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Margins r(best) - r(worst) [N, D] and a mask [N, D] of which (pair, dimension) is labelled."""
    dims = list(head.dimensions)
    p = next(head.parameters())
    a = torch.stack([x.video_a for x in pairs]).to(p.device)
    b = torch.stack([x.video_b for x in pairs]).to(p.device)
    prompts = [x.prompt for x in pairs]
    r = head(torch.cat([a, b]), prompts + prompts)  # [2N, D]
    r_a, r_b = r[: len(pairs)], r[len(pairs) :]
    sign = torch.tensor(
        [[1.0 if x.labels.get(d) == "a" else -1.0 for d in dims] for x in pairs], device=r.device
    )
    mask = torch.tensor([[d in x.labels for d in dims] for x in pairs], device=r.device)
    return sign * (r_a - r_b), mask


def bradley_terry_loss(head: PreferenceHead, pairs: Sequence[PreferencePair]) -> torch.Tensor:
    """Mean -log sigmoid(r(best) - r(worst)) over the labelled (pair, dimension) entries (scalar)."""
    margin, mask = _batch(head, pairs)
    if not mask.any():
        return margin.sum() * 0.0
    return -F.logsigmoid(margin[mask]).mean()


def _labelled(head: PreferenceHead, pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
    dims = set(head.dimensions)
    return [x for x in pairs if dims & x.labels.keys()]


def train_reward_model(
    head: PreferenceHead,
    pairs: Sequence[PreferencePair],
    steps: int,
    lr: float = 1e-3,
    seed: int = 0,
    batch_size: int = 16,
    weight_decay: float = 0.0,
) -> dict[str, float]:
    """Fit ``head`` to ``pairs`` with AdamW on the Bradley-Terry loss (minibatches drawn with ``seed``).

    Pairs labelling none of the head's dimensions are ignored.

    Returns:
        {"loss_first", "loss_last" (minibatch losses of the first and last step), "loss_mean_last10",
        "pairs" (used), "steps"}.
    """
    used = _labelled(head, pairs)
    if not used:
        raise ValueError(f"no pair labels any of the head's dimensions {tuple(head.dimensions)}")
    rng = random.Random(seed)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    head.train()
    losses: list[float] = []
    for _ in range(steps):
        batch = rng.sample(used, min(batch_size, len(used)))
        loss = bradley_terry_loss(head, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    head.eval()
    tail = losses[-10:] or [float("nan")]
    return {
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last": losses[-1] if losses else float("nan"),
        "loss_mean_last10": sum(tail) / len(tail),
        "pairs": float(len(used)),
        "steps": float(steps),
    }


@torch.no_grad()
def preference_accuracy(
    head: PreferenceHead, pairs: Sequence[PreferencePair], batch_size: int = 32
) -> dict[str, float]:
    """Fraction of labelled (pair, dimension) entries where the head prefers the labelled video.

    A tie (equal scores) counts as half right. Returns dimension -> accuracy (NaN when none is
    labelled) and "all" over every entry.
    """
    was_training = head.training
    head.eval()
    dims = list(head.dimensions)
    right, total = torch.zeros(len(dims)), torch.zeros(len(dims))
    used = _labelled(head, pairs)
    for i in range(0, len(used), batch_size):
        margin, mask = _batch(head, used[i : i + batch_size])
        score = (margin > 0).float() + 0.5 * (margin == 0).float()
        right += (score * mask).sum(0).cpu()
        total += mask.sum(0).cpu()
    head.train(was_training)
    out = {d: float(right[j] / total[j]) if total[j] else float("nan") for j, d in enumerate(dims)}
    out["all"] = float(right.sum() / total.sum()) if total.sum() else float("nan")
    return out


@torch.no_grad()
def pairs_from_rewards(
    videos: Sequence[torch.Tensor],
    prompts: Sequence[str],
    reward_fns: Mapping[str, Reward],
    margin: float = 0.0,
) -> list[PreferencePair]:
    """Label every pair of samples of each prompt by the given rewards.

    Args:
        videos: per prompt, K >= 2 samples [K, 3, T, H, W] in [-1, 1].
        prompts: the prompts, one per entry of ``videos``.
        reward_fns: dimension -> reward; a pair is labelled on a dimension when the rewards of its
            two videos differ by more than ``margin`` (ties carry no preference).
        margin: the smallest difference that counts.

    Returns:
        One ``PreferencePair`` per (prompt, i < j) with at least one label; ``video_a`` is sample i.
    """
    if len(videos) != len(prompts):
        raise ValueError(f"{len(videos)} video groups but {len(prompts)} prompts")
    out: list[PreferencePair] = []
    for group, prompt in zip(videos, prompts, strict=True):
        k = group.shape[0]
        scores = {d: fn(group, [prompt] * k).float().cpu() for d, fn in reward_fns.items()}
        for i, j in combinations(range(k), 2):
            labels: dict[str, Literal["a", "b"]] = {}
            for d, s in scores.items():
                diff = float(s[i] - s[j])
                if abs(diff) > margin:
                    labels[d] = "a" if diff > 0 else "b"
            if labels:
                out.append(PreferencePair(prompt, group[i], group[j], labels))
    return out
