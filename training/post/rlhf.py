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
The objective itself (rollout, rewards, regulariser) is ``training/post/refl.py``, shared with the
refiner's RLHF; its settings are ``post.rlhf``. Rounds (policy training, then new preference pairs and
reward-model retraining) and the reward-hacking monitor are in ``training/post/rlhf_rounds.py``;
Flow-DPO and the ReFL vs Flow-DPO comparison in ``training/post/flow_dpo.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import captioner.vlm_reward  # noqa: F401  (registers the vlm_foundational reward)
from models.dit.model import velocity_fn
from models.rewards.base import Reward
from training.config import Layers, StageConfig, TrainConfig, apply_layers, from_dict, update_config
from training.data.list_loader import Item, ListLoader, collate_items  # noqa: F401  (re-exported)
from training.loop.checkpoint import LatentStats, load_checkpoint, resolve_checkpoint
from training.loop.distributed import DistInfo
from training.loop.dit_trainer import DiTNet, DiTTrainer
from training.loop.flow_matching import resolution_shift
from training.loop.trainer import Batch
from training.post.config import PostConfig, section_dict
from training.post.inputs import RunInputs
from training.post.refl import (  # noqa: F401  (build_rewards, decode_video, refl_rollout re-exported)
    ReFLObjective,
    Rollout,
    build_rewards,
    decode_video,
    refl_rollout,
    reward_stats,
)

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


def batch_prompts(mb: Batch) -> list[str]:
    """English caption of each sample, the Chinese one where it has none."""
    zh = mb.get("caption_zh") or [None] * len(mb["key"])
    return [en or z or "" for en, z in zip(mb.get("caption_en") or [None] * len(zh), zh, strict=True)]


# --------------------------------------------------------------------------- config and init


def rlhf_config(base: str | Path, steps: int | Callable[[PostConfig], int], n_frames: int | None = None,
                size: tuple[int, int] | None = None, global_batch: int | None = None, lr: float | None = None,
                overrides: Layers = None) -> TrainConfig:
    """The config of a ReFL run: the base checkpoint's, with fresh ``post`` settings (defaults, then
    ``overrides``: ``key=value`` strings or a nested mapping), one "rlhf" stage built from
    ``post.rlhf`` (its frames and size default to the base's last stage), ``steps``, and a constant
    ``post.rlhf.lr`` without warm-up. ``n_frames``, ``size``, ``global_batch`` and ``lr``, when
    given, set those ``post.rlhf`` keys; ``steps`` may be a function of the resolved ``post``
    (``rlhf_rounds``: rounds x steps per round). ``overrides`` are applied again last, so a
    top-level key (``lr=...``, ``stages=...``) set there wins over the preset."""
    cfg = from_dict(load_checkpoint(resolve_checkpoint(base))["config"])
    cfg.post = PostConfig()
    apply_layers(cfg, overrides)
    given = {"n_frames": n_frames, "size": size, "global_batch": global_batch, "lr": lr}
    update_config(cfg, {"post": {"rlhf": {k: v for k, v in given.items() if v is not None}}})
    r, last = cfg.post.rlhf, cfg.stages[-1]
    cfg.stages = [StageConfig("rlhf", 1.0, n_frames=last.n_frames if r.n_frames is None else r.n_frames,
                              size=tuple(last.size if r.size is None else r.size), fps=last.fps,
                              global_batch=r.global_batch, i2v_share=0.0)]
    cfg.steps = steps(cfg.post) if callable(steps) else int(steps)
    cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio, cfg.ckpt_every = r.lr, 0, 1.0, cfg.steps
    return apply_layers(cfg, overrides)


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
    """ReFL on prompts (see the module doc and ``training/post/refl.py``), settings ``cfg.post.rlhf``.

    Args:
        cfg: ``rlhf_config(base, ...)``.
        inputs: ``base``: "dit" checkpoint (file or run directory): policy init (EMA weights), frozen
            reference, frozen VAE and latent statistics; ``prompts`` (strings or loader items;
            default the captions of ``data``); ``reward_models`` (instances by name, else
            ``build_reward``); ``eval_prompts`` and ``eval_rewards``: ``evaluate()`` scores these
            prompts with fixed noise under the optimised rewards plus ``eval_rewards``.
        out: run directory.
    """

    kind = "dit"

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None) -> None:
        self.base_path = resolve_checkpoint(inputs.base)
        if inputs.prompts is None:
            if inputs.data is None:
                raise ValueError("RLHF needs prompts or a shards directory whose captions are the prompts")
            self.items = prompts_from_shards(inputs.data)
        else:
            self.items = [p if isinstance(p, dict) else {"key": f"p{i:06d}", "caption_en": p}
                          for i, p in enumerate(inputs.prompts)]
        self.objective = ReFLObjective(cfg.post.rlhf, inputs.reward_models)
        super().__init__(cfg, inputs.data or "", out, self.base_path, device, dist)
        self.reference = load_policy_net(self.base_path, cfg).to(self.device).eval().requires_grad_(False)
        self.rewards = self.objective.rewards
        self.sample_steps, self.cfg_scale = self.objective.sample_steps, self.objective.cfg_scale
        self.eval_prompts, self.eval_rewards = list(inputs.eval_prompts), dict(inputs.eval_rewards)
        self.round_end: int | None = None  # rlhf_rounds trains up to here

    def build_net(self) -> nn.Module:
        return load_policy_net(self.base_path, self.cfg)

    @property
    def total_steps(self) -> int:
        return self.cfg.steps if self.round_end is None else min(self.round_end, self.cfg.steps)

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**super().checkpoint_extra(),
                "rlhf": {"method": "refl", "base": str(self.base_path), **section_dict(self.cfg.post.rlhf)}}

    def shape(self) -> tuple[int, ...]:
        return latent_shape(self.cfg, self.cfg.stages[max(self.stage_index, 0)])

    def uncond_inputs(self, b: int) -> dict[str, Any] | None:
        if self.cfg_scale == 1.0:
            return None
        return self.text_inputs({"key": [""] * b, "caption_en": [""] * b}, None, 0.0)

    def rollout(self, mb: Batch) -> Rollout:
        """The policy and reference from per-sample noise, on the micro-batch's captions."""
        shape = self.shape()
        noise = torch.cat([torch.randn((1, *shape), generator=g) for g in self.sample_generators(mb)])
        return Rollout(velocity_fn(self.model), velocity_fn(self.reference), noise.to(self.device),
                       self.text_inputs(mb, None, 0.0), batch_prompts(mb), sampling_shift(self.cfg, shape),
                       self.uncond_inputs(len(mb["key"])))

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        return self.objective.step(self, micro_batches, gen, self.rollout)

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
