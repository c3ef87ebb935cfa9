"""Flow-DPO baseline and the ReFL vs Flow-DPO comparison (settings ``post.flow_dpo``, ``post.rlhf_compare``).

**Flow-DPO** (``FlowDPOTrainer``): Diffusion-DPO (Wallace et al. 2023) with the noise-prediction
error replaced by the velocity error of rectified flow. For a pair (winner ``z_w``, loser ``z_l``)
of normalised latents, one timestep ``t`` and one noise ``eps`` shared by both,
``x_t = (1 - t) z + t eps``, ``v* = eps - z`` and ``e(model, z) = mean ||v_model(x_t) - v*||^2``:

    loss = -log sigmoid(-beta / 2 * [(e(pi, z_w) - e(ref, z_w)) - (e(pi, z_l) - e(ref, z_l))])

The implicit reward margin ``(e(ref, z_w) - e(pi, z_w)) - (e(ref, z_l) - e(pi, z_l))`` grows as the
policy's likelihood of the preferred sample rises relative to the loser's (``eval/margin``).

**Comparison** (``compare``; ``compare_refl_dpo`` takes keyword settings): from one base checkpoint,
ReFL and Flow-DPO get the same
number of DiT forward+backward passes (ReFL: K per prompt per step; DPO: 2 per pair per step); DPO
trains on pairs sampled from the base policy and labelled by the composite reward. Both are scored
on held-out prompts with fixed noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.dit.model import velocity_fn
from models.rewards.base import Reward
from training.config import Layers, TrainConfig
from training.loop.checkpoint import resolve_checkpoint
from training.loop.distributed import DistInfo
from training.loop.dit_trainer import DiTNet, DiTTrainer
from training.loop.flow_matching import ModelFn, logit_normal_t, shift_t
from training.loop.trainer import Batch
from training.post.config import PostConfig, section_dict, settings_tree
from training.post.inputs import RunInputs
from training.post.rlhf import (
    RLHFTrainer,
    build_rewards,
    collate_items,
    decode_video,
    latent_shape,
    load_policy_net,
    rlhf_config,
    sample_latents,
    sampling_shift,
    score_policy,
)

# --------------------------------------------------------------------------- Flow-DPO


def flow_dpo_loss(policy_fn: ModelFn, ref_fn: ModelFn, z_w: Tensor, z_l: Tensor, kwargs: Any, t: Tensor,
                  noise: Tensor, beta: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Flow-DPO loss (module doc) of a batch of pairs; ``t`` [B] and ``noise`` are shared by winner and loser.

    Returns:
        ``(loss, aux)`` with per-pair ``margin`` [B] (implicit reward margin) and ``err_w``, ``err_l``.
    """
    b = z_w.shape[0]
    tb = t.to(z_w).view(b, *([1] * (z_w.dim() - 1)))
    errs = {}
    for name, z in (("w", z_w), ("l", z_l)):
        x_t, target = (1 - tb) * z + tb * noise, (noise - z).float()
        with torch.no_grad():
            ref = ((ref_fn(x_t, t, kwargs).float() - target) ** 2).reshape(b, -1).mean(1)
        pol = ((policy_fn(x_t, t, kwargs).float() - target) ** 2).reshape(b, -1).mean(1)
        errs[name], errs[f"ref_{name}"] = pol, ref
    diff = (errs["w"] - errs["ref_w"]) - (errs["l"] - errs["ref_l"])
    loss = -F.logsigmoid(-0.5 * beta * diff).mean()
    return loss, {"margin": -diff.detach(), "err_w": errs["w"].detach(), "err_l": errs["l"].detach()}


@torch.no_grad()
def latent_pairs(net: DiTNet, vae: nn.Module, stats: Any, cfg: TrainConfig, prompts: Sequence[str],
                 composite: Any, shape: Sequence[int], steps: int, device: str | torch.device,
                 seed: int = 0, samples_per_prompt: int = 2) -> tuple[list[dict[str, Any]], list[Tensor]]:
    """Sample ``samples_per_prompt`` latents per prompt; the composite reward picks winner and loser.

    Returns:
        (DPO items ``{"key", "caption_en", "z_w", "z_l", "r_w", "r_l"}`` (best vs worst sample per
        prompt; prompts whose samples tie are skipped), per-prompt decoded videos ``[K, 3, T, H, W]``).
    """
    shift = sampling_shift(cfg, shape)
    k = samples_per_prompt
    zs = [sample_latents(net, list(prompts), shape, steps, shift, device, seed + j * len(prompts))
          for j in range(k)]  # [k] x [P, ...]
    z = torch.stack(zs, 1)  # [P, k, ...]
    items, videos = [], []
    for i, prompt in enumerate(prompts):
        video = decode_video(vae, stats, z[i])
        r = composite(video, [prompt] * k).float().cpu()
        videos.append(video.cpu())
        hi, lo = int(r.argmax()), int(r.argmin())
        if float(r[hi]) > float(r[lo]):
            items.append({"key": f"pair{i:06d}", "caption_en": prompt, "z_w": z[i, hi].cpu(),
                          "z_l": z[i, lo].cpu(), "r_w": float(r[hi]), "r_l": float(r[lo])})
    return items, videos


class FlowDPOTrainer(DiTTrainer):
    """Flow-DPO on preference pairs (``latent_pairs`` items) from a "dit" base checkpoint.

    The policy starts from the base's EMA weights; the reference is a frozen copy of it. One item
    costs 2 policy forward+backward passes and 2 reference forwards per step.
    """

    kind = "dit"

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None) -> None:
        if not inputs.pairs:
            raise ValueError("Flow-DPO needs at least one preference pair")
        self.base_path, self.items = resolve_checkpoint(inputs.base), list(inputs.pairs)
        self.beta, self.n_eval = float(cfg.post.flow_dpo.beta), int(cfg.post.flow_dpo.eval_pairs)
        super().__init__(cfg, "", out, self.base_path, device, dist)
        self.reference = load_policy_net(self.base_path, cfg).to(self.device).eval().requires_grad_(False)

    def build_net(self) -> nn.Module:
        return load_policy_net(self.base_path, self.cfg)

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**super().checkpoint_extra(), "rlhf": {"method": "flow_dpo", "base": str(self.base_path),
                                                       "pairs": len(self.items),
                                                       **section_dict(self.cfg.post.flow_dpo)}}

    def pair_loss(self, mb: Batch, gens: list[torch.Generator]) -> tuple[Tensor, dict[str, Tensor]]:
        z_w, z_l = mb["z_w"].to(self.device), mb["z_l"].to(self.device)
        t = torch.cat([logit_normal_t(1, generator=g) for g in gens])
        t = shift_t(t, sampling_shift(self.cfg, z_w.shape))
        noise = torch.cat([torch.randn((1, *z_w.shape[1:]), generator=g) for g in gens]).to(self.device)
        kwargs = self.text_inputs(mb, None, 0.0)
        with self.autocast():
            return flow_dpo_loss(velocity_fn(self.model), velocity_fn(self.reference), z_w, z_l, kwargs,
                                 t.to(self.device), noise, self.beta)

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        n = sum(len(mb["key"]) for mb in micro_batches)
        loss_sum, margins = 0.0, []
        for i, mb in enumerate(micro_batches):
            b = len(mb["key"])
            with self.no_sync(last=i == len(micro_batches) - 1):
                loss, aux = self.pair_loss(mb, self.sample_generators(mb))
                (loss * b / n).backward()
            loss_sum += float(loss.detach()) * b
            margins.append(aux["margin"].cpu())
        m = torch.cat(margins)
        return {"loss": loss_sum / n, "margin": float(m.mean()), "accuracy": float((m > 0).float().mean())}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """DPO loss and implicit margin on the first ``eval_pairs`` pairs, fixed timesteps and noise."""
        self.model.eval()
        mb = collate_items(self.items[: self.n_eval])
        gens = [torch.Generator().manual_seed(20_000 + i) for i in range(len(mb["key"]))]
        loss, aux = self.pair_loss(mb, gens)
        return {"eval/dpo_loss": float(loss), "eval/margin": float(aux["margin"].mean()),
                "eval/accuracy": float((aux["margin"] > 0).float().mean())}


# --------------------------------------------------------------------------- ReFL vs Flow-DPO


def rel_change(after: float, before: float) -> float:
    """``(after - before) / |before|`` (0 when both are 0)."""
    return 0.0 if after == before else (after - before) / max(abs(before), 1e-12)


def compare_config(base: str | Path, overrides: Layers = None) -> tuple[TrainConfig, TrainConfig]:
    """(ReFL config, Flow-DPO config) of ``compare``: equal DiT forward+backward passes
    (``post.rlhf_compare.grad_passes``; ReFL: ``grad_steps`` per prompt per step, DPO: 2 per pair)."""
    def refl_steps(post: PostConfig) -> int:
        return max(1, post.rlhf_compare.grad_passes // (post.rlhf.grad_steps * post.rlhf.global_batch))

    def dpo_steps(post: PostConfig) -> int:
        return max(1, post.rlhf_compare.grad_passes // (2 * post.rlhf.global_batch))

    refl = rlhf_config(base, refl_steps, overrides=overrides)
    dpo = rlhf_config(base, dpo_steps, overrides=overrides)
    dpo.lr = refl.post.flow_dpo.lr or refl.lr
    return refl, dpo


def compare(cfg: TrainConfig, dpo_cfg: TrainConfig, inputs: RunInputs, out: str | Path,
            heldout_reward: str | Reward,
            device: str | None = None) -> list[dict[str, Any]]:
    """ReFL vs Flow-DPO at equal DiT forward+backward passes, scored on ``inputs.eval_prompts``.

    Returns:
        Rows ``{"method", "steps", "grad_passes", "nograd_forwards", "composite", "composite_change",
        "heldout", "heldout_change", ...}`` for "base", "refl" and "flow_dpo" (``format_table`` prints them).
    """
    out = Path(out)
    prompts, heldout_prompts = list(inputs.prompts or []), list(inputs.eval_prompts)
    held = build_rewards({heldout_reward: 1.0}).rewards[heldout_reward] if isinstance(heldout_reward, str) \
        else heldout_reward
    r, k = cfg.post.rlhf, cfg.post.rlhf_compare.samples_per_prompt
    trainer = RLHFTrainer(cfg, dataclasses.replace(inputs, eval_prompts=()), out / "refl", device=device)
    shape = latent_shape(cfg, cfg.stages[0])

    def scores(net: DiTNet) -> dict[str, float]:
        terms = score_policy(net, trainer.vae, trainer.stats, cfg, heldout_prompts,
                             {**trainer.rewards.rewards, "heldout": held}, trainer.rewards.weights,
                             r.sample_steps, shape, trainer.device, trainer.cfg_scale)
        return {k: float(v.mean()) for k, v in terms.items()}

    base_scores = scores(trainer.net)
    items, _ = latent_pairs(trainer.reference, trainer.vae, trainer.stats, cfg, prompts, trainer.rewards,
                            shape,
                            r.sample_steps, trainer.device, seed=777, samples_per_prompt=k)
    trainer.train(progress=False)
    refl_scores = scores(trainer.net)
    dpo = FlowDPOTrainer(dpo_cfg, RunInputs(inputs.base, pairs=items), out / "flow_dpo", device=device)
    dpo.train(progress=False)
    dpo_scores = scores(dpo.net)
    b, n_p = r.global_batch, len(prompts)
    rows = [{"method": "base", "steps": 0, "grad_passes": 0, "nograd_forwards": 0, **base_scores},
            {"method": "refl", "steps": cfg.steps, "grad_passes": cfg.steps * b * r.grad_steps,
             # per prompt: N - K no-grad policy steps + K reference forwards
             "nograd_forwards": cfg.steps * b * r.sample_steps, **refl_scores},
            {"method": "flow_dpo", "steps": dpo_cfg.steps, "grad_passes": dpo_cfg.steps * b * 2,
             # pair sampling (k samples x N steps per prompt) + 2 reference forwards per pair per step
             "nograd_forwards": n_p * k * r.sample_steps + dpo_cfg.steps * b * 2,
             "pairs": len(items), **dpo_scores}]
    for row in rows:
        row["composite_change"] = rel_change(row["composite"], base_scores["composite"])
        row["heldout_change"] = rel_change(row["heldout"], base_scores["heldout"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return rows


def compare_refl_dpo(base: str | Path, out: str | Path, prompts: Sequence[str],
                     heldout_prompts: Sequence[str],
                     reward_weights: Mapping[str, float], heldout_reward: str | Reward = "stability",
                     reward_models: Mapping[str, Reward] | None = None, device: str | None = None,
                     **settings: Any) -> list[dict[str, Any]]:
    """``compare`` from keyword settings: ``grad_passes`` and ``samples_per_prompt``
    (``post.rlhf_compare``), ``dpo_beta`` / ``dpo_lr`` (``post.flow_dpo.beta`` / ``lr``), any
    ``post.rlhf`` key (``lr``, ``global_batch``, ``beta``, ``sample_steps``, ...)."""
    post = settings_tree(settings, {"rlhf_compare": ("grad_passes", "samples_per_prompt"),
                                    "flow_dpo": ("dpo_beta", "dpo_lr")})
    post.setdefault("rlhf", {})["rewards"] = dict(reward_weights)
    cfg, dpo_cfg = compare_config(base, {"post": post})
    inputs = RunInputs(base, prompts=list(prompts), eval_prompts=list(heldout_prompts),
                       reward_models=dict(reward_models or {}))
    return compare(cfg, dpo_cfg, inputs, out, heldout_reward, device)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width text table of ``compare_refl_dpo`` rows."""
    cols = ["method", "steps", "grad_passes", "nograd_forwards", "composite", "composite_change", "heldout",
            "heldout_change"]
    fmt = [(c, max(len(c), 10)) for c in cols]
    lines = ["  ".join(c.rjust(w) for c, w in fmt)]
    for row in rows:
        cells = []
        for c, w in fmt:
            v = row.get(c, "")
            cells.append((f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else str(v)).rjust(w))
        lines.append("  ".join(cells))
    return "\n".join(lines)
