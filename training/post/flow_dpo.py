"""Flow-DPO baseline, RLHF rounds with reward-model retraining, and the ReFL vs Flow-DPO comparison.

**Flow-DPO** (``FlowDPOTrainer``): Diffusion-DPO (Wallace et al. 2023) with the noise-prediction
error replaced by the velocity error of rectified flow. For a pair (winner ``z_w``, loser ``z_l``)
of normalised latents, one timestep ``t`` and one noise ``eps`` shared by both,
``x_t = (1 - t) z + t eps``, ``v* = eps - z`` and ``e(model, z) = mean ||v_model(x_t) - v*||^2``:

    loss = -log sigmoid(-beta / 2 * [(e(pi, z_w) - e(ref, z_w)) - (e(pi, z_l) - e(ref, z_l))])

The implicit reward margin ``(e(ref, z_w) - e(pi, z_w)) - (e(ref, z_l) - e(pi, z_l))`` grows as the
policy's likelihood of the preferred sample rises relative to the loser's (``eval/margin``).

**Rounds** (``rlhf_rounds``): each round trains the ReFL policy ``steps_per_round`` steps, scores
the held-out prompts with fixed noise (optimised rewards, their batch variance, and a held-out
reward that is never optimised: the reward-hacking monitor), samples ``samples_per_prompt`` new
videos per training prompt, labels preference pairs with the reward models
(``training.post.reward_trainer.pairs_from_rewards``) and retrains the learned reward heads (rewards
with a ``head``, e.g. "text_alignment", "motion_learned") on the pairs labelling their dimensions
before the next round. Labels come from ``label_rewards`` (dimension -> reward; default the
non-learned rewards of the set, by name).

**Comparison** (``compare_refl_dpo``): from one base checkpoint, ReFL and Flow-DPO get the same
number of DiT forward+backward passes (ReFL: K per prompt per step; DPO: 2 per pair per step); DPO
trains on pairs sampled from the base policy and labelled by the composite reward. Both are scored
on held-out prompts with fixed noise.
"""

from __future__ import annotations

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
from training.config import TrainConfig
from training.loop.checkpoint import resolve_checkpoint
from training.loop.distributed import DistInfo
from training.loop.dit_trainer import DiTNet, DiTTrainer
from training.loop.flow_matching import ModelFn, logit_normal_t, shift_t
from training.loop.trainer import Batch
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

    def __init__(self, cfg: TrainConfig, base: str | Path, out: str | Path, pairs: Sequence[dict[str, Any]],
                 beta: float = 500.0, eval_pairs: int = 8, device: str | torch.device | None = None,
                 dist: DistInfo | None = None) -> None:
        if not pairs:
            raise ValueError("Flow-DPO needs at least one preference pair")
        self.base_path, self.items, self.beta = resolve_checkpoint(base), list(pairs), float(beta)
        self.n_eval = eval_pairs
        super().__init__(cfg, "", out, self.base_path, device, dist)
        self.reference = load_policy_net(self.base_path, cfg).to(self.device).eval().requires_grad_(False)

    def build_net(self) -> nn.Module:
        return load_policy_net(self.base_path, self.cfg)

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**super().checkpoint_extra(), "rlhf": {"method": "flow_dpo", "base": str(self.base_path),
                                                       "beta": self.beta, "pairs": len(self.items)}}

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


# --------------------------------------------------------------------------- rounds


def _learned_heads(composite: Any) -> dict[str, nn.Module]:
    return {n: r.head for n, r in composite.rewards.items()
            if isinstance(getattr(r, "head", None), nn.Module) and hasattr(r.head, "dimensions")}


def _policy_scores(trainer: RLHFTrainer, prompts: Sequence[str],
                   heldout: Mapping[str, Reward]) -> dict[str, float]:
    t = trainer
    terms = score_policy(t.net, t.vae, t.stats, t.cfg, prompts, {**t.rewards.rewards, **heldout},
                         t.rewards.weights, t.sample_steps, t.shape(), t.device, t.cfg_scale)
    out = {}
    for k, v in terms.items():
        out[k], out[f"{k}_var"] = float(v.mean()), float(v.var(unbiased=False))
    return out


def rel_change(after: float, before: float) -> float:
    """``(after - before) / |before|`` (0 when both are 0)."""
    return 0.0 if after == before else (after - before) / max(abs(before), 1e-12)


def rlhf_rounds(base: str | Path, out: str | Path, prompts: Sequence[str] | None = None,
                data: str | Path | None = None, rounds: int = 2, steps_per_round: int = 20,
                reward_weights: Mapping[str, float] | None = None, heldout_reward: str | Reward = "stability",
                heldout_prompts: Sequence[str] | None = None, n_heldout: int = 4,
                reward_models: Mapping[str, Reward] | None = None,
                label_rewards: Mapping[str, Reward] | None = None, samples_per_prompt: int = 2,
                reward_steps: int = 20, n_frames: int | None = None, size: tuple[int, int] | None = None,
                global_batch: int = 4, lr: float = 1e-4, device: str | None = None,
                **refl: Any) -> dict[str, Any]:
    """RLHF rounds (module doc). ``refl`` goes to ``RLHFTrainer`` (beta, sample_steps, grad_steps, ...).

    Without ``heldout_prompts`` the last ``n_heldout`` prompts are held out of training.

    Returns:
        ``{"rounds": [row, ...], "checkpoint", "out"}``; row 0 is the base policy. Each row has the
        held-out scores (``composite``, each term, ``heldout/<name>``, their ``_var``), the held-out
        reward's relative change since the base (``heldout_change``) and the reward-model retraining
        results (``reward_training``). Also written to ``<out>/rlhf_rounds.json``.
    """
    from training.post.reward_trainer import pairs_from_rewards, preference_accuracy, train_reward_model

    if prompts is None:
        from training.post.rlhf import prompts_from_shards

        prompts = [it["caption_en"] or it["caption_zh"] for it in prompts_from_shards(data)]  # type: ignore[arg-type]
    prompts = list(prompts)
    if heldout_prompts is None:
        prompts, heldout_prompts = prompts[:-n_heldout], prompts[-n_heldout:]
    if not prompts:
        raise ValueError("no training prompts left after holding out the evaluation prompts")
    held_name = heldout_reward if isinstance(heldout_reward, str) else heldout_reward.name
    held = {f"heldout/{held_name}": heldout_reward if not isinstance(heldout_reward, str)
            else build_rewards({heldout_reward: 1.0}).rewards[heldout_reward]}
    weights = dict(reward_weights or {"motion": 1.0, "aesthetic_proxy": 1.0})
    cfg = rlhf_config(base, rounds * steps_per_round, n_frames, size, global_batch, lr)
    trainer = RLHFTrainer(cfg, base, out, prompts=prompts, rewards=weights, reward_models=reward_models,
                          device=device, **refl)  # the rounds score the held-out prompts themselves
    heads = _learned_heads(trainer.rewards)
    labellers = dict(label_rewards) if label_rewards is not None else {
        n: r for n, r in trainer.rewards.rewards.items() if n not in heads}
    hk = f"heldout/{held_name}"
    rows = [{"round": 0, "step": 0, **_policy_scores(trainer, heldout_prompts, held)}]
    rows[0]["heldout_change"] = 0.0
    for r in range(1, rounds + 1):
        trainer.round_end = r * steps_per_round
        trainer.train(progress=False)
        row: dict[str, Any] = {"round": r, "step": trainer.step,
                               **_policy_scores(trainer, heldout_prompts, held)}
        row["heldout_change"] = rel_change(row[hk], rows[0][hk])
        row["composite_change"] = rel_change(row["composite"], rows[0]["composite"])
        row["reward_training"] = {}
        if heads and labellers and r < rounds:
            _, videos = latent_pairs(trainer.net, trainer.vae, trainer.stats, trainer.cfg, prompts,
                                     trainer.rewards, trainer.shape(), trainer.sample_steps, trainer.device,
                                     seed=1000 * r, samples_per_prompt=samples_per_prompt)
            pairs = pairs_from_rewards(videos, prompts, labellers)
            for name, head in heads.items():
                if not set(head.dimensions) & {d for p in pairs for d in p.labels}:
                    continue
                head.requires_grad_(True)
                fit = train_reward_model(head, pairs, reward_steps, seed=r)
                head.requires_grad_(False)
                row["reward_training"][name] = {**fit, "accuracy": preference_accuracy(head, pairs)["all"]}
        rows.append(row)
    result = {"rounds": rows, "checkpoint": str(resolve_checkpoint(out)), "out": str(out),
              "heldout_prompts": list(heldout_prompts)}
    Path(out, "rlhf_rounds.json").write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")
    return result


# --------------------------------------------------------------------------- ReFL vs Flow-DPO


def compare_refl_dpo(base: str | Path, out: str | Path, prompts: Sequence[str],
                     heldout_prompts: Sequence[str],
                     reward_weights: Mapping[str, float], heldout_reward: str | Reward = "stability",
                     reward_models: Mapping[str, Reward] | None = None, grad_passes: int = 64,
                     global_batch: int = 4, lr: float = 1e-4, dpo_lr: float | None = None,
                     dpo_beta: float = 500.0, samples_per_prompt: int = 4, n_frames: int | None = None,
                     size: tuple[int, int] | None = None, device: str | None = None,
                     **refl: Any) -> list[dict[str, Any]]:
    """ReFL vs Flow-DPO at equal DiT forward+backward passes (``grad_passes``), scored on held-out prompts.

    Returns:
        Rows ``{"method", "steps", "grad_passes", "nograd_forwards", "composite", "composite_change",
        "heldout", "heldout_change", ...}`` for "base", "refl" and "flow_dpo" (``format_table`` prints them).
    """
    out = Path(out)
    held = build_rewards({heldout_reward: 1.0}).rewards[heldout_reward] if isinstance(heldout_reward, str) \
        else heldout_reward
    k_grad, n_steps = int(refl.get("grad_steps", 1)), int(refl.get("sample_steps", 8))
    refl_steps = max(1, grad_passes // (k_grad * global_batch))
    dpo_steps = max(1, grad_passes // (2 * global_batch))
    cfg = rlhf_config(base, refl_steps, n_frames, size, global_batch, lr)
    trainer = RLHFTrainer(cfg, base, out / "refl", prompts=list(prompts), rewards=reward_weights,
                          reward_models=reward_models, device=device, **refl)
    shape = latent_shape(cfg, cfg.stages[0])

    def scores(net: DiTNet) -> dict[str, float]:
        terms = score_policy(net, trainer.vae, trainer.stats, cfg, heldout_prompts,
                             {**trainer.rewards.rewards, "heldout": held}, trainer.rewards.weights, n_steps,
                             shape, trainer.device, trainer.cfg_scale)
        return {k: float(v.mean()) for k, v in terms.items()}

    base_scores = scores(trainer.net)
    items, _ = latent_pairs(trainer.reference, trainer.vae, trainer.stats, cfg, list(prompts),
                            trainer.rewards, shape, n_steps, trainer.device, seed=777,
                            samples_per_prompt=samples_per_prompt)
    trainer.train(progress=False)
    refl_scores = scores(trainer.net)
    dpo_cfg = rlhf_config(base, dpo_steps, n_frames, size, global_batch, dpo_lr or lr)
    dpo = FlowDPOTrainer(dpo_cfg, base, out / "flow_dpo", items, beta=dpo_beta, device=device)
    dpo.train(progress=False)
    dpo_scores = scores(dpo.net)
    n_p = len(prompts)
    rows = [{"method": "base", "steps": 0, "grad_passes": 0, "nograd_forwards": 0, **base_scores},
            {"method": "refl", "steps": refl_steps, "grad_passes": refl_steps * global_batch * k_grad,
             # per prompt: N - K no-grad policy steps + K reference forwards
             "nograd_forwards": refl_steps * global_batch * n_steps, **refl_scores},
            {"method": "flow_dpo", "steps": dpo_steps, "grad_passes": dpo_steps * global_batch * 2,
             # pair sampling (k samples x N steps per prompt) + 2 reference forwards per pair per step
             "nograd_forwards": n_p * samples_per_prompt * n_steps + dpo_steps * global_batch * 2,
             "pairs": len(items), **dpo_scores}]
    for row in rows:
        row["composite_change"] = rel_change(row["composite"], base_scores["composite"])
        row["heldout_change"] = rel_change(row["heldout"], base_scores["heldout"])
    (out / "compare.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return rows


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
