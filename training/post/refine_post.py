"""Post-training of the cascade refiner (training/post/refine.py): its own SFT and its own RLHF (ReFL).

``RefinerSFTTrainer``: fine-tunes a "refiner" checkpoint with the refiner's objective (flow matching on
the high-res latent conditioned on the upsampled low-res latent). The trainable net and the EMA start
from the refiner's EMA weights; the base reference (``refiner.base`` of the checkpoint: its frozen VAE
and latent statistics) is kept; the optimizer starts fresh. The schedule is ``training.post.sft.sft_config``
over the refiner's config (lr / 5 unless the refiner is already an SFT, one "sft" stage: the refiner's
stage). Data: pixel shards (``data``) or a catalog ``where`` selection exported to ``out/data``
(``training.post.sft.prepare_selection``). Latent shards are refused (the refiner encodes two resolutions).

``RefinerRLHFTrainer``: ReFL on the refiner. Per prompt, the low-res latent is sampled by the *frozen
base* "dit" checkpoint (without grad, ``base_steps`` Euler steps from noise seeded per sample key, at
the stage size / SCALE): the refiner is optimised on what the cascade feeds it at generation time, not
on data latents. The refiner then samples the high-res latent with ``refl_rollout`` (truncated backprop
through its last ``grad_steps`` steps; the policy and reference velocity functions close over
``lowres``), the frozen VAE decodes it, and the loss is ``-composite reward + beta * reg`` where
``reg`` is the velocity MSE against the frozen initial refiner (its EMA weights).

Both write checkpoint kind "refiner" (with the original ``refiner`` entry, so ``load_refiner`` and
``generate --refine`` take them) plus ``refine_sft`` / ``refine_rlhf`` entries naming the source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models.dit.model import velocity_fn
from models.rewards.base import Reward
from training.config import StageConfig, TrainConfig, from_dict
from training.loop.checkpoint import latest_checkpoint, load_checkpoint, resolve_checkpoint
from training.loop.distributed import DistInfo
from training.loop.trainer import Batch
from training.post.refine import SCALE, RefinerNet, RefinerTrainer
from training.post.reward_tally import RewardTally, reward_stats
from training.post.rlhf import (
    build_rewards,
    decode_video,
    latent_shape,
    load_policy_net,
    prompt_items,
    prompts_from_shards,
    refl_rollout,
    rlhf_config,
    sampling_shift,
)
from training.post.sft import prepare_finetune_data, sft_config


def _load_refiner_ckpt(path: str | Path) -> tuple[Path, dict[str, Any]]:
    p = resolve_checkpoint(path)
    ckpt = load_checkpoint(p)
    if ckpt.get("kind") != "refiner":
        raise ValueError(f"{path} is a {ckpt.get('kind')!r} checkpoint; this needs a 'refiner' one")
    return p, ckpt


class _FromRefiner(RefinerTrainer):
    """A ``RefinerTrainer`` whose net and EMA start from a "refiner" checkpoint's EMA weights."""

    def __init__(self, cfg: TrainConfig, data: str | Path, out: str | Path, refiner_ckpt: str | Path,
                 device: str | torch.device | None = None, dist: DistInfo | None = None,
                 refiner_state: dict[str, Any] | None = None) -> None:
        if refiner_state is None:
            self.refiner_path, refiner_state = _load_refiner_ckpt(refiner_ckpt)
        else:
            self.refiner_path = resolve_checkpoint(refiner_ckpt)
        info = dict(refiner_state["refiner"])
        self.refiner_info, self.refiner_step = info, int(refiner_state["step"])
        super().__init__(cfg, data, out, info["base"], device=device, dist=dist, upsample=info["upsample"],
                         lowres_noise=float(info.get("lowres_noise", 0.1)))
        self.dist.load_model_state(self.net, refiner_state["ema"])
        self.ema.load_state_dict(refiner_state["ema"])


# --------------------------------------------------------------------------- SFT


class RefinerSFTTrainer(_FromRefiner):
    """Refiner fine-tuning on pixel shards; same objective as ``RefinerTrainer``, kind "refiner"."""

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**super().checkpoint_extra(),
                "refine_sft": {"refiner": str(self.refiner_path), "refiner_step": self.refiner_step}}


def refiner_sft(refiner_ckpt: str | Path, data: str | Path | None = None, catalog: str | Path | None = None,
                where: str | None = None, *, out: str | Path, steps: int | None = None,
                overrides: list[str] | None = None, progress: bool = True,
                device: str | None = None) -> dict[str, Any]:
    """``vidloom refine-sft``: fine-tune a refiner on ``data`` (pixel shards) or a catalog selection.

    Resumes from ``out``'s newest checkpoint; another refiner/data/selection for ``out`` is refused.
    Returns ``{"out", "checkpoint", "refiner", "data", "summary"}``."""
    from training.loop.run import _manifest, _write_config

    out = Path(out)
    path, state = _load_refiner_ckpt(refiner_ckpt)
    path = path.resolve()
    dist = DistInfo.from_env()
    info_path = out / "refine_sft.json"
    data, record = prepare_finetune_data(out, info_path, {"refiner": str(path)}, data, catalog, where, dist)
    if _manifest(Path(data)).get("kind") == "latents":
        raise ValueError("the refiner trains on pixel shards (it encodes two resolutions), not latents")
    cfg = sft_config(from_dict(state["config"]), steps, overrides)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _write_config(out, cfg)
    trainer = RefinerSFTTrainer(cfg, data, out, path, device=device, dist=dist, refiner_state=state)
    del state
    if dist.is_main:
        info_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    summary = trainer.train(progress)
    return {"out": str(out), "checkpoint": str(latest_checkpoint(out)), "refiner": str(path),
            "data": str(data), "summary": summary}


# --------------------------------------------------------------------------- RLHF


class RefinerRLHFTrainer(_FromRefiner):
    """ReFL on the refiner (module doc). ``cfg``: ``rlhf_config(refiner_ckpt, ...)``."""

    def __init__(self, cfg: TrainConfig, refiner_ckpt: str | Path, out: str | Path,
                 prompts: Sequence[str] | None = None, data: str | Path | None = None,
                 rewards: Mapping[str, float] | None = None,
                 reward_models: Mapping[str, Reward] | None = None,
                 beta: float = 0.1, sample_steps: int = 8, grad_steps: int = 1, base_steps: int = 8,
                 eval_prompts: Sequence[str] = (), device: str | torch.device | None = None,
                 dist: DistInfo | None = None) -> None:
        if prompts is None:
            if data is None:
                raise ValueError("refiner RLHF needs prompts or a shards directory (its captions)")
            self.items = prompts_from_shards(data)
        else:
            self.items = prompt_items(prompts)
        path, state = _load_refiner_ckpt(refiner_ckpt)
        super().__init__(cfg, data or "", out, path, device=device, dist=dist, refiner_state=state)
        self.lowres_noise = 0.0  # the low-res latent is already an (imperfect) base sample
        self.reference = RefinerNet(cfg, self.net.dit.extra_channels, self.upsample)
        self.reference.load_state_dict(state["ema"])
        self.reference.to(self.device).eval().requires_grad_(False)
        del state
        self.base = load_policy_net(self.base_path, cfg).to(self.device).eval().requires_grad_(False)
        self.rewards = build_rewards(rewards or {"motion": 1.0, "aesthetic_proxy": 1.0}, reward_models)
        self.beta, self.sample_steps, self.grad_steps = float(beta), int(sample_steps), int(grad_steps)
        self.base_steps = int(base_steps)
        self.eval_prompts = list(eval_prompts)

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**super().checkpoint_extra(), "refine_rlhf": {
            "method": "refl", "refiner": str(self.refiner_path), "refiner_step": self.refiner_step,
            "rewards": self.rewards.weights, "beta": self.beta, "sample_steps": self.sample_steps,
            "grad_steps": self.grad_steps, "base_steps": self.base_steps, "lowres": "base_sample"}}

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(high-res, low-res) latent shapes (C, T', H', W') of the stage."""
        st = self.cfg.stages[max(self.stage_index, 0)]
        low = StageConfig(st.name, 1.0, n_frames=st.n_frames, size=(st.size[0] // SCALE, st.size[1] // SCALE))
        return latent_shape(self.cfg, st), latent_shape(self.cfg, low)

    @torch.no_grad()
    def base_lowres(self, texts: list[str], noise: Tensor) -> Tensor:
        """Normalised low-res latents of the frozen base (Euler, no grad) from ``noise``."""
        with self.autocast():
            x0, _, _ = refl_rollout(velocity_fn(self.base), noise.to(self.device), {"texts": texts},
                                    self.base_steps, 1, None, sampling_shift(self.cfg, noise.shape[1:]))
        return x0.float()

    def rollout(self, texts: list[str], noise_hi: Tensor, noise_lo: Tensor,
                model: nn.Module | None = None, grad_steps: int | None = None) -> tuple[Tensor, Tensor]:
        """(decoded refined video [B, 3, T, H, W], reg [B]) of ``model`` (default: the policy)."""
        lowres = self.base_lowres(texts, noise_lo)

        def with_lowres(m: nn.Module) -> Any:
            fn = velocity_fn(m)
            return lambda x, t, kw: fn(x, t, {**kw, "lowres": lowres})

        with self.autocast():
            x0, reg, _ = refl_rollout(with_lowres(model or self.model), noise_hi.to(self.device),
                                      {"texts": texts}, self.sample_steps, grad_steps or self.grad_steps,
                                      None, sampling_shift(self.cfg, noise_hi.shape[1:]),
                                      with_lowres(self.reference) if model is None else None)
            video = decode_video(self.vae, self.stats, x0)
        return video, reg

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        n = sum(len(mb["key"]) for mb in micro_batches)
        hi, lo = self.shapes()
        tally = RewardTally(self.rewards, self.beta)
        for i, mb in enumerate(micro_batches):
            b = len(mb["key"])
            gens = self.sample_generators(mb)
            noise_lo = torch.cat([torch.randn((1, *lo), generator=g) for g in gens])
            noise_hi = torch.cat([torch.randn((1, *hi), generator=g) for g in gens])
            texts = self.text_inputs(mb, None, 0.0)["texts"]
            with self.no_sync(last=i == len(micro_batches) - 1):
                video, reg = self.rollout(texts, noise_hi, noise_lo)
                loss = tally.loss(video, texts, reg)
                (loss * b / n).backward()
            tally.add(loss, b)
        return tally.result(n)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], seed: int = 10_000) -> dict[str, Tensor]:
        """Per-prompt rewards ``{name: [B]}`` + ``composite`` of the refined outputs of the current net,
        from fixed noise (prompt ``i``: seed ``seed + i``, for both the base and the refiner)."""
        hi, lo = self.shapes()
        gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
        noise_lo = torch.cat([torch.randn((1, *lo), generator=g) for g in gens])
        noise_hi = torch.cat([torch.randn((1, *hi), generator=g) for g in gens])
        was = self.net.training
        self.net.eval()
        video, _ = self.rollout(list(prompts), noise_hi, noise_lo, model=self.net, grad_steps=1)
        self.net.train(was)
        terms = {k: v.float().cpu() for k, v in self.rewards.terms(video, list(prompts)).items()}
        terms["composite"] = self.rewards.combine(terms).float().cpu()
        return terms

    def evaluate(self) -> dict[str, float]:
        return reward_stats(self.score(self.eval_prompts), prefix="eval") if self.eval_prompts else {}


def refiner_rlhf(refiner_ckpt: str | Path, out: str | Path, prompts: Sequence[str] | None = None,
                 data: str | Path | None = None, steps: int = 100, global_batch: int = 4, lr: float = 1e-4,
                 rewards: Mapping[str, float] | None = None,
                 reward_models: Mapping[str, Reward] | None = None,
                 beta: float = 0.1, sample_steps: int = 8, grad_steps: int = 1, base_steps: int = 8,
                 eval_prompts: Sequence[str] = (), overrides: Mapping[str, Any] | None = None,
                 progress: bool = True, device: str | None = None) -> dict[str, Any]:
    """``vidloom refine-rlhf``: ReFL on a refiner (the refiner's stage size and frames); resumes.
    Returns ``{"out", "checkpoint", "refiner", "summary"}``."""
    path, _ = _load_refiner_ckpt(refiner_ckpt)
    cfg = rlhf_config(path, steps=steps, global_batch=global_batch, lr=lr, overrides=overrides)
    trainer = RefinerRLHFTrainer(cfg, path, out, prompts=prompts, data=data, rewards=rewards,
                                 reward_models=reward_models, beta=beta, sample_steps=sample_steps,
                                 grad_steps=grad_steps, base_steps=base_steps, eval_prompts=eval_prompts,
                                 device=device)
    summary = trainer.train(progress)
    return {"out": str(out), "checkpoint": str(latest_checkpoint(out)), "refiner": str(path),
            "summary": summary}


__all__ = ["RefinerRLHFTrainer", "RefinerSFTTrainer", "refiner_rlhf", "refiner_sft"]
