"""RLHF of the DiT by direct reward maximisation (ReFL; Seedance 1.0 §4.1; docs/architecture.md "RLHF").

ReFL (ImageReward, Xu et al. 2023) adapted to rectified flow. Per prompt and optimizer step:

1. Sample with the current policy from noise: ``steps`` Euler steps on ``sampling_schedule`` (the
   shift generation uses). The first steps run without autograd; the last ``grad_steps`` (K)
   before the stop step are differentiated (truncated backpropagation through the sampler).
2. At the stop step ``s`` (default the last one; ``stop_range`` draws it per micro-batch, ReFL's
   random late step) predict ``x0 = x_t - t v``; at the last step this is exactly the Euler sample.
3. Decode ``x0`` with the frozen VAE (its weights are frozen, the gradient flows through it) and
   score the video with the weighted rewards (``CompositeReward``, ``models/rewards``).
4. ``loss = -sum_k w_k r_k + beta * reg``. ``reg`` is the reference regulariser: the MSE between
   the policy's and the frozen reference's (the base checkpoint's) velocities at the same ``x_t``,
   averaged over the K differentiated steps. For two flow policies driven by the same noise this is
   (up to the step-size weighting) the KL of their Euler-Maruyama path measures, so ``beta``
   trades reward against drift from the pretrained model. (The alternative, a flow-matching loss on
   pretraining data, needs data latents each step; it is not implemented.)

Each reward term's batch mean and variance are logged (``reward/<name>``, ``reward_var/<name>``).
Prompts come from a list or from the captions of a shards directory (``prompts_from_shards``).
Checkpoints are ordinary "dit" checkpoints (``load_pipeline`` reads them) plus an ``rlhf`` entry.
Rounds (policy training, then new preference pairs and reward-model retraining), the reward-hacking
monitor, Flow-DPO and the ReFL vs Flow-DPO comparison are in ``training/post/flow_dpo.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import captioner.vlm_reward  # noqa: F401  (registers the vlm_foundational reward)
from models.dit.model import velocity_fn
from models.rewards.base import Reward
from training.config import StageConfig, TrainConfig, from_dict, update_config
from training.data.list_loader import Item, ListLoader, collate_items  # noqa: F401  (re-exported)
from training.loop.checkpoint import LatentStats, load_checkpoint, resolve_checkpoint
from training.loop.distributed import DistInfo
from training.loop.dit_trainer import DiTNet, DiTTrainer
from training.loop.flow_matching import ModelFn, cfg_velocity, resolution_shift, sampling_schedule
from training.loop.trainer import Batch
from training.post.reward_tally import RewardTally, reward_stats

# --------------------------------------------------------------------------- prompts and loader


def prompt_items(prompts: Sequence[str], prefix: str = "p") -> list[Item]:
    """Loader items ``{"key", "caption_en"}`` of a prompt list (keys seed each sample's noise)."""
    return [{"key": f"{prefix}{i:06d}", "caption_en": p} for i, p in enumerate(prompts)]


def prompts_from_shards(shards: str | Path) -> list[Item]:
    """Loader items (key, caption_en, caption_zh) of a shards directory, read without decoding video."""
    from training.data.latents import open_dataset

    ds = open_dataset(shards)
    items = []
    for i in range(len(ds)):
        key, fields = ds.raw(i)
        caps = {f"caption_{lang}": fields[f"{lang}.txt"].decode("utf-8") if f"{lang}.txt" in fields else None
                for lang in ("en", "zh")}
        if caps["caption_en"] or caps["caption_zh"]:
            items.append({"key": key, **caps})
    if not items:
        raise ValueError(f"{shards} has no captions to use as prompts")
    return items


# --------------------------------------------------------------------------- rewards


def build_rewards(weights: Mapping[str, float], models: Mapping[str, Reward] | None = None) -> Any:
    """The weighted sum of the named rewards (``CompositeReward``: ``terms``, ``combine``, ``rewards``);
    ``models`` supplies instances by name (else ``build_reward``). Every term must be differentiable."""
    from models.rewards.builtin import CompositeReward

    if not weights:
        raise ValueError("at least one reward weight is needed")
    composite = CompositeReward({k: float(v) for k, v in weights.items()}, dict(models or {}))
    if not composite.differentiable:
        raise ValueError(f"ReFL back-propagates through the rewards; not all of {sorted(weights)} "
                         "are differentiable")
    return composite


# --------------------------------------------------------------------------- truncated sampling


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


def batch_prompts(mb: Batch) -> list[str]:
    """English caption of each sample, the Chinese one where it has none."""
    zh = mb.get("caption_zh") or [None] * len(mb["key"])
    return [en or z or "" for en, z in zip(mb.get("caption_en") or [None] * len(zh), zh, strict=True)]


# --------------------------------------------------------------------------- config and init


def rlhf_config(base: str | Path, steps: int = 100, n_frames: int | None = None,
                size: tuple[int, int] | None = None, global_batch: int = 4, lr: float = 1e-4,
                overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The base checkpoint's config with one "rlhf" stage (default: its last stage's frames and size),
    ``steps``, a constant learning rate without warm-up and ``overrides`` (nested dict) applied."""
    cfg = from_dict(load_checkpoint(resolve_checkpoint(base))["config"])
    last = cfg.stages[-1]
    cfg.stages = [StageConfig("rlhf", 1.0, n_frames=last.n_frames if n_frames is None else n_frames,
                              size=tuple(last.size if size is None else size), fps=last.fps,
                              global_batch=global_batch, i2v_share=0.0)]
    cfg.steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio = steps, lr, 0, 1.0
    cfg.ckpt_every = steps
    if overrides:
        update_config(cfg, dict(overrides))
    return cfg


def load_policy_net(path: str | Path, cfg: TrainConfig, use_ema: bool = True) -> DiTNet:
    """A ``DiTNet`` of ``cfg`` holding the "dit" checkpoint's (EMA) weights."""
    ckpt = load_checkpoint(resolve_checkpoint(path))
    if ckpt.get("kind") != "dit":
        raise ValueError(f"{path} is a {ckpt.get('kind')!r} checkpoint; RLHF starts from a 'dit' one")
    net = DiTNet(cfg)
    net.load_state_dict(ckpt["ema" if use_ema else "net"])
    return net


def latent_shape(cfg: TrainConfig, stage: StageConfig) -> tuple[int, ...]:
    """(C, T', H', W') of the stage's samples."""
    return (cfg.dit.in_channels, *cfg.vae.latent_shape(stage.n_frames, *stage.size))


def sampling_shift(cfg: TrainConfig, shape: Sequence[int]) -> float:
    """The sampling-schedule shift generation uses for latents of ``shape`` (C, T', H', W')."""
    if not cfg.timestep_shift:
        return 1.0
    pt, ph, pw = cfg.dit.patch
    return resolution_shift((shape[-3] // pt) * (shape[-2] // ph) * (shape[-1] // pw))


# --------------------------------------------------------------------------- trainer


class RLHFTrainer(DiTTrainer):
    """ReFL on prompts (see the module doc). ``rewards`` maps reward names to weights.

    Args:
        cfg: ``rlhf_config(base, ...)``.
        base: "dit" checkpoint (file or run directory): policy init (EMA weights), frozen reference,
            frozen VAE and latent statistics.
        out: run directory.
        prompts: prompt strings, or loader items; default the captions of ``data``.
        data: shards directory whose captions are the prompts (when ``prompts`` is None).
        rewards: ``{name: weight}``; ``reward_models`` supplies instances by name (else ``build_reward``).
        beta: weight of the reference-velocity regulariser.
        sample_steps, grad_steps: N Euler steps, K differentiated ones.
        stop_range: (lo, hi) step indices; the x0-prediction step is drawn uniformly from it per
            micro-batch (default ``(N - 1, N - 1)``: the full sample).
        cfg_scale: guidance used while sampling (1 = none; else the negative is the empty caption).
        eval_prompts, eval_rewards: ``evaluate()`` scores these prompts with fixed noise under
            the optimised rewards plus ``eval_rewards`` (``{name: Reward}``, e.g. a held-out one).
    """

    kind = "dit"

    def __init__(self, cfg: TrainConfig, base: str | Path, out: str | Path,
                 prompts: Sequence[str] | Sequence[Item] | None = None, data: str | Path | None = None,
                 rewards: Mapping[str, float] | None = None,
                 reward_models: Mapping[str, Reward] | None = None,
                 beta: float = 0.1, sample_steps: int = 8, grad_steps: int = 1,
                 stop_range: tuple[int, int] | None = None, cfg_scale: float = 1.0,
                 eval_prompts: Sequence[str] = (), eval_rewards: Mapping[str, Reward] | None = None,
                 device: str | torch.device | None = None, dist: DistInfo | None = None) -> None:
        self.base_path = resolve_checkpoint(base)
        if prompts is None:
            if data is None:
                raise ValueError("RLHF needs prompts or a shards directory whose captions are the prompts")
            self.items = prompts_from_shards(data)
        else:
            self.items = [p if isinstance(p, dict) else {"key": f"p{i:06d}", "caption_en": p}
                          for i, p in enumerate(prompts)]
        super().__init__(cfg, data or "", out, self.base_path, device, dist)
        self.reference = load_policy_net(self.base_path, cfg).to(self.device).eval().requires_grad_(False)
        self.rewards = build_rewards(rewards or {"motion": 1.0, "aesthetic_proxy": 1.0}, reward_models)
        self.beta, self.sample_steps, self.grad_steps = float(beta), int(sample_steps), int(grad_steps)
        self.stop_range = stop_range or (self.sample_steps - 1, self.sample_steps - 1)
        self.cfg_scale = float(cfg_scale)
        self.eval_prompts, self.eval_rewards = list(eval_prompts), dict(eval_rewards or {})
        self.round_end: int | None = None  # rlhf_rounds trains up to here

    def build_net(self) -> nn.Module:
        return load_policy_net(self.base_path, self.cfg)

    @property
    def total_steps(self) -> int:
        return self.cfg.steps if self.round_end is None else min(self.round_end, self.cfg.steps)

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**super().checkpoint_extra(), "rlhf": {
            "method": "refl", "base": str(self.base_path), "rewards": self.rewards.weights, "beta": self.beta,
            "sample_steps": self.sample_steps, "grad_steps": self.grad_steps,
            "stop_range": list(self.stop_range), "cfg_scale": self.cfg_scale}}

    def shape(self) -> tuple[int, ...]:
        return latent_shape(self.cfg, self.cfg.stages[max(self.stage_index, 0)])

    def uncond_inputs(self, b: int) -> dict[str, Any] | None:
        if self.cfg_scale == 1.0:
            return None
        return self.text_inputs({"key": [""] * b, "caption_en": [""] * b}, None, 0.0)

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        n = sum(len(mb["key"]) for mb in micro_batches)
        lo, hi = self.stop_range
        stop = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        shape = self.shape()
        shift = sampling_shift(self.cfg, shape)
        tally = RewardTally(self.rewards, self.beta)
        for i, mb in enumerate(micro_batches):
            b = len(mb["key"])
            noise = torch.cat([torch.randn((1, *shape), generator=g) for g in self.sample_generators(mb)])
            kwargs = self.text_inputs(mb, None, 0.0)
            with self.no_sync(last=i == len(micro_batches) - 1):
                with self.autocast():
                    x0, reg, _ = refl_rollout(
                        velocity_fn(self.model), noise.to(self.device), kwargs, self.sample_steps,
                        self.grad_steps, stop, shift, velocity_fn(self.reference), self.cfg_scale,
                        self.uncond_inputs(b))
                    video = decode_video(self.vae, self.stats, x0)
                loss = tally.loss(video, batch_prompts(mb), reg)
                (loss * b / n).backward()
            tally.add(loss, b)
        return {**tally.result(n), "stop": float(stop)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Rewards of the current policy on ``eval_prompts`` with fixed noise (``score_policy``)."""
        if not self.eval_prompts:
            return {}
        self.model.eval()
        terms = score_policy(self.net, self.vae, self.stats, self.cfg, self.eval_prompts,
                             {**self.rewards.rewards, **self.eval_rewards}, self.rewards.weights,
                             self.sample_steps, self.shape(), self.device, self.cfg_scale)
        return reward_stats(terms, prefix="eval")


@torch.no_grad()
def sample_latents(net: DiTNet, prompts: Sequence[str], shape: Sequence[int], steps: int, shift: float,
                   device: str | torch.device, seed: int = 0, cfg_scale: float = 1.0) -> Tensor:
    """Euler samples ``[B, C, T', H', W']`` of ``net``; prompt ``i`` gets the noise of ``seed + i``."""
    noise = torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed + i))
                       for i in range(len(prompts))]).to(device)
    uncond = {"texts": [""] * len(prompts)} if cfg_scale != 1.0 else None
    x0, _, _ = refl_rollout(velocity_fn(net), noise, {"texts": list(prompts)}, steps, 1, None, shift,
                            None, cfg_scale, uncond)
    return x0


@torch.no_grad()
def score_policy(net: DiTNet, vae: nn.Module, stats: LatentStats, cfg: TrainConfig, prompts: Sequence[str],
                 models: Mapping[str, Reward], weights: Mapping[str, float], steps: int,
                 shape: Sequence[int], device: str | torch.device, cfg_scale: float = 1.0,
                 seed: int = 10_000) -> dict[str, Tensor]:
    """Per-prompt scores ``{name: [B]}`` of every reward in ``models`` plus ``composite`` (the
    ``weights``-weighted sum), on samples from fixed noise (``seed``): comparable across policies."""
    was = net.training
    net.eval()
    z = sample_latents(net, prompts, shape, steps, sampling_shift(cfg, shape), device, seed, cfg_scale)
    video = decode_video(vae, stats, z)
    terms = {name: m(video, list(prompts)).float().cpu() for name, m in models.items()}
    terms["composite"] = sum(float(w) * terms[k] for k, w in weights.items())  # type: ignore[assignment]
    net.train(was)
    return terms
