"""The ReFL objective and its per-step bookkeeping, shared by the DiT and refiner RLHF trainers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from models.rewards.base import Reward


def reward_stats(values: Mapping[str, Tensor], prefix: str = "reward") -> dict[str, float]:
    """``{prefix/name: mean, prefix_var/name: variance}`` over the batch of each term."""
    out = {}
    for name, v in values.items():
        v = v.detach().float()
        out[f"{prefix}/{name}"] = float(v.mean())
        out[f"{prefix}_var/{name}"] = float(v.var(unbiased=False)) if v.numel() > 1 else 0.0
    return out


class RewardTally:
    """ReFL loss ``mean(-composite + beta * reg)`` per micro-batch, and the step's running sums."""

    def __init__(self, rewards: Reward, beta: float) -> None:
        self.rewards, self.beta = rewards, beta
        self.loss_sum = self.reg_sum = 0.0
        self.values: dict[str, list[Tensor]] = {}

    def loss(self, video: Tensor, prompts: Sequence[str], reg: Tensor) -> Tensor:
        """The micro-batch's loss; its reward terms (and ``composite``) and ``reg`` are recorded."""
        terms = self.rewards.terms(video, list(prompts))
        total = self.rewards.combine(terms)
        for k, v in {**terms, "composite": total}.items():
            self.values.setdefault(k, []).append(v.detach().cpu())
        self.reg_sum += float(reg.detach().sum())
        return (-total + self.beta * reg).mean()

    def add(self, loss: Tensor, b: int) -> None:
        self.loss_sum += float(loss.detach()) * b

    def result(self, n: int) -> dict[str, float]:
        """Mean loss and reg over the step's ``n`` samples, and ``reward_stats`` of every term."""
        stats = reward_stats({k: torch.cat(v) for k, v in self.values.items()})
        return {"loss": self.loss_sum / n, "reg": self.reg_sum / n, **stats}
