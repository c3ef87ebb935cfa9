"""The ReFL objective (ImageReward's reward feedback learning adapted to rectified flow), one
implementation that the DiT's RLHF (``training/post/rlhf.py``) and the refiner's
(``training/post/refine_post.py``) both train with; its settings are ``post.rlhf``
(``training.post.config.ReFLConfig``).

Per micro-batch: sample with the policy from noise (``refl_rollout``: ``sample_steps`` Euler steps, the
last ``grad_steps`` before the stop step differentiated), predict ``x0`` at the stop step (drawn per
optimizer step from ``stop_range``; default the last step), decode it with the frozen VAE and score
the video with the weighted rewards; ``loss = mean(-composite + beta * reg)``, ``reg`` the MSE between
the policy's and the frozen reference's velocities over the differentiated steps. What differs between
the DiT and the refiner is only what a rollout starts from (``Rollout``: the velocity functions, the
noise, the conditioning), which each trainer supplies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.rewards.base import Reward
from models.rewards.builtin import CompositeReward
from training.loop.checkpoint import LatentStats
from training.loop.flow_matching import ModelFn, cfg_velocity, sampling_schedule
from training.loop.trainer import Batch, Trainer
from training.post.config import ReFLConfig


def build_rewards(weights: Mapping[str, float], models: Mapping[str, Reward] | None = None) -> Any:
    """The weighted sum of the named rewards (``CompositeReward``: ``terms``, ``combine``, ``rewards``);
    ``models`` supplies instances by name (else ``build_reward``). Every term must be differentiable."""
    if not weights:
        raise ValueError("at least one reward weight is needed")
    composite = CompositeReward({k: float(v) for k, v in weights.items()}, dict(models or {}))
    if not composite.differentiable:
        raise ValueError(f"ReFL back-propagates through the rewards; not all of {sorted(weights)} "
                         "are differentiable")
    return composite


def refl_rollout(policy_fn: ModelFn, noise: Tensor, kwargs: Any, steps: int, grad_steps: int,
                 stop: int | None = None, shift: float = 1.0, ref_fn: ModelFn | None = None,
                 cfg_scale: float = 1.0, uncond: Any = None) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Euler sampling with truncated backprop, then the x0 prediction at step ``stop``.

    Args:
        policy_fn: ``(x, t, kwargs) -> v`` of the policy (``velocity_fn``).
        noise: ``[B, ...]`` start state at t = 1.
        steps: Euler steps N of the full schedule ``sampling_schedule(steps, shift)``.
        grad_steps: K >= 1: velocity evaluations ``stop - K + 1 .. stop`` are differentiated, the
            ones before run under ``torch.no_grad``.
        stop: step index in ``[0, N)`` whose velocity predicts ``x0 = x_t - t v`` (default N - 1:
            the Euler sample itself); later steps are skipped.
        ref_fn: the frozen reference's velocity function; gives ``reg``.
        cfg_scale, uncond: classifier-free guidance of both policy and reference.

    Returns:
        ``(x0 [B, ...], reg [B], info)``: ``reg`` is the per-sample mean over the differentiated
        steps of ``mean((v - v_ref)^2)`` (zeros without ``ref_fn``); ``info`` has ``ts`` and
        ``grad_flags`` (whether autograd was on for each velocity evaluation).
    """
    stop = steps - 1 if stop is None else int(stop)
    if not 0 <= stop < steps or grad_steps < 1:
        raise ValueError(f"need 0 <= stop < steps and grad_steps >= 1, got stop {stop}, steps {steps}, "
                         f"grad_steps {grad_steps}")
    ts = sampling_schedule(steps, shift).tolist()
    b = noise.shape[0]
    first = max(0, stop - grad_steps + 1)

    def vel(fn: ModelFn, x: Tensor, t: float) -> Tensor:
        tt = torch.full((b,), t, dtype=noise.dtype, device=noise.device)
        return cfg_velocity(fn, x, tt, kwargs, uncond, cfg_scale)

    x, flags, regs = noise, [], []
    with torch.no_grad():
        for i in range(first):
            flags.append(torch.is_grad_enabled())
            x = x + (ts[i + 1] - ts[i]) * vel(policy_fn, x, ts[i])
    x0 = x
    for i in range(first, stop + 1):
        flags.append(torch.is_grad_enabled())
        v = vel(policy_fn, x, ts[i])
        if ref_fn is not None:
            with torch.no_grad():
                v_ref = vel(ref_fn, x.detach(), ts[i])
            regs.append(((v.float() - v_ref.float()) ** 2).reshape(b, -1).mean(1))
        if i == stop:
            x0 = x - ts[i] * v
        else:
            x = x + (ts[i + 1] - ts[i]) * v
    reg = torch.stack(regs).mean(0) if regs else noise.new_zeros(b, dtype=torch.float32)
    return x0, reg, {"ts": ts, "grad_flags": flags, "first_grad_step": first, "stop": stop}


def decode_video(vae: nn.Module, stats: LatentStats, z: Tensor) -> Tensor:
    """Normalised latents -> ``[B, 3, T, H, W]`` in [-1, 1] through the frozen VAE (differentiable in z)."""
    return vae.decode(stats.denormalize(z.float())).float().clamp(-1.0, 1.0)


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


@dataclass
class Rollout:
    """Where one micro-batch's rollout starts: what the DiT and the refiner trainers differ in."""

    policy: ModelFn  # the policy's velocity function (gradients flow through it)
    reference: ModelFn  # the frozen reference's (gives the regulariser)
    noise: Tensor  # [B, ...] start state at t = 1, on the trainer's device
    kwargs: Any  # the policy's conditioning (captions, ...)
    prompts: list[str]  # what the rewards score the videos against
    shift: float  # the sampling schedule's shift
    uncond: Any = None  # the empty-caption conditioning (with cfg_scale != 1)


class ReFLObjective:
    """The ReFL objective of one run: its rewards and ``post.rlhf`` settings (module doc)."""

    def __init__(self, cfg: ReFLConfig, reward_models: Mapping[str, Reward] | None = None) -> None:
        self.rewards = build_rewards(cfg.rewards, reward_models)
        self.beta, self.sample_steps = float(cfg.beta), int(cfg.sample_steps)
        self.grad_steps = int(cfg.grad_steps)
        last = self.sample_steps - 1
        self.stop_range = (int(cfg.stop_range[0]), int(cfg.stop_range[1])) if cfg.stop_range else (last, last)
        lo, hi = self.stop_range
        if not 0 <= lo <= hi <= last or self.grad_steps > self.sample_steps:
            raise ValueError(f"post.rlhf: need 0 <= stop_range[0] <= stop_range[1] < sample_steps "
                             f"({self.sample_steps}) and grad_steps <= sample_steps; got stop_range "
                             f"{list(self.stop_range)}, grad_steps {self.grad_steps}")
        self.cfg_scale = float(cfg.cfg_scale)

    def draw_stop(self, gen: torch.Generator) -> int:
        """The step's x0-prediction step, uniform over ``stop_range``."""
        lo, hi = self.stop_range
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    def step(self, trainer: Trainer, micro_batches: list[Batch], gen: torch.Generator,
             rollout: Callable[[Batch], Rollout]) -> dict[str, float]:
        """The trainer's ``forward_backward_step``: every micro-batch's rollout (``rollout(mb)``),
        decode, reward and regulariser, back-propagated with the micro-batch's share of the step."""
        n = sum(len(mb["key"]) for mb in micro_batches)
        stop = self.draw_stop(gen)
        tally = RewardTally(self.rewards, self.beta)
        vae, stats = trainer.vae, trainer.stats  # type: ignore[attr-defined]
        for i, mb in enumerate(micro_batches):
            b = len(mb["key"])
            with trainer.no_sync(last=i == len(micro_batches) - 1):
                r = rollout(mb)
                with trainer.autocast():
                    x0, reg, _ = refl_rollout(r.policy, r.noise, r.kwargs, self.sample_steps, self.grad_steps,
                                              stop, r.shift, r.reference, self.cfg_scale, r.uncond)
                    video = decode_video(vae, stats, x0)
                loss = tally.loss(video, r.prompts, reg)
                (loss * b / n).backward()
            tally.add(loss, b)
        return {**tally.result(n), "stop": float(stop)}
