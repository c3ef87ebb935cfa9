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
on data latents. The rest is the DiT's ReFL objective, the same code and the same ``post.rlhf``
settings (``training/post/refl.py``): the refiner samples the high-res latent with truncated backprop
through its last ``grad_steps`` steps (the policy and reference velocity functions close over
``lowres``), the frozen VAE decodes it, and the loss is ``-composite reward + beta * reg`` where
``reg`` is the velocity MSE against the frozen initial refiner (its EMA weights).

Both write checkpoint kind "refiner" (with the original ``refiner`` entry, so ``load_refiner`` and
``generate --refine`` take them) plus ``refine_sft`` / ``refine_rlhf`` entries naming the source.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models.dit.model import velocity_fn
from models.rewards.base import Reward
from training.config import Layers, StageConfig, TrainConfig, from_dict
from training.loop.checkpoint import latest_checkpoint, load_checkpoint, resolve_checkpoint
from training.loop.distributed import DistInfo
from training.loop.trainer import Batch
from training.post.config import section_dict, settings_tree
from training.post.inputs import RunInputs
from training.post.refine import SCALE, RefinerNet, RefinerTrainer, refiner_settings
from training.post.refl import ReFLObjective, Rollout, decode_video, refl_rollout, reward_stats
from training.post.rlhf import (
    latent_shape,
    load_policy_net,
    prompt_items,
    prompts_from_shards,
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
    """A ``RefinerTrainer`` whose net and EMA start from a "refiner" checkpoint's (``inputs.base``) EMA
    weights; its base DiT is the refiner's, and ``cfg.post.refine`` becomes the refiner's settings
    (the architecture: ``upsample``)."""

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None,
                 refiner_state: dict[str, Any] | None = None) -> None:
        if refiner_state is None:
            self.refiner_path, refiner_state = _load_refiner_ckpt(inputs.base)
        else:
            self.refiner_path = resolve_checkpoint(inputs.base)
        info = dict(refiner_state["refiner"])
        self.refiner_info, self.refiner_step = info, int(refiner_state["step"])
        cfg.post.refine = refiner_settings(refiner_state)
        super().__init__(cfg, dataclasses.replace(inputs, base=info["base"]), out, dist, device=device)
        self.dist.load_model_state(self.net, refiner_state["ema"])
        self.ema.load_state_dict(refiner_state["ema"])


# --------------------------------------------------------------------------- SFT


class RefinerSFTTrainer(_FromRefiner):
    """Refiner fine-tuning on pixel shards; same objective as ``RefinerTrainer``, kind "refiner"."""

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**super().checkpoint_extra(),
                "refine_sft": {"refiner": str(self.refiner_path), "refiner_step": self.refiner_step,
                               **section_dict(self.cfg.post.sft)}}


def refiner_sft_config(refiner_ckpt: str | Path, overrides: Layers = None) -> TrainConfig:
    """``sft_config`` (``post.sft``) over a refiner checkpoint's config."""
    _, state = _load_refiner_ckpt(refiner_ckpt)
    cfg = sft_config(from_dict(state["config"]), overrides=overrides)
    cfg.post.refine = refiner_settings(state)
    return cfg


def refiner_sft(refiner_ckpt: str | Path, data: str | Path | None = None, catalog: str | Path | None = None,
                where: str | None = None, *, out: str | Path, steps: int | None = None,
                overrides: Layers = None, progress: bool = True, device: str | None = None,
                cfg: TrainConfig | None = None) -> dict[str, Any]:
    """``vidloom post refine-sft``: fine-tune a refiner on ``data`` (pixel shards) or a catalog selection,
    with ``cfg`` (default: ``sft_config`` over the refiner's config, ``steps`` and ``overrides``).

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
    if cfg is None:
        cfg = sft_config(from_dict(state["config"]), steps, overrides)
    trainer = RefinerSFTTrainer(cfg, RunInputs(path, data=data), out, dist, device=device,
                                refiner_state=state)
    del state
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _write_config(out, trainer.cfg)
        info_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    summary = trainer.train(progress)
    return {"out": str(out), "checkpoint": str(latest_checkpoint(out)), "refiner": str(path),
            "data": str(data), "summary": summary}


# --------------------------------------------------------------------------- RLHF


class RefinerRLHFTrainer(_FromRefiner):
    """ReFL on the refiner (module doc): the objective of ``training/post/refl.py`` with ``post.rlhf``,
    and ``post.refine_rlhf.base_steps``. ``cfg``: ``refiner_rlhf_config(refiner_ckpt, ...)``;
    ``inputs``: ``base`` the refiner, ``prompts`` (or the captions of ``data``), ``reward_models``,
    ``eval_prompts``."""

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None) -> None:
        if inputs.prompts is None:
            if inputs.data is None:
                raise ValueError("refiner RLHF needs prompts or a shards directory (its captions)")
            self.items = prompts_from_shards(inputs.data)
        else:
            self.items = prompt_items(inputs.prompts)
        self.objective = ReFLObjective(cfg.post.rlhf, inputs.reward_models)
        path, state = _load_refiner_ckpt(inputs.base)
        super().__init__(cfg, dataclasses.replace(inputs, base=path), out, dist, device=device,
                         refiner_state=state)
        self.lowres_noise = 0.0  # the low-res latent is already an (imperfect) base sample
        self.reference = RefinerNet(cfg, self.net.dit.extra_channels, self.upsample)
        self.reference.load_state_dict(state["ema"])
        self.reference.to(self.device).eval().requires_grad_(False)
        del state
        self.base = load_policy_net(self.base_path, cfg).to(self.device).eval().requires_grad_(False)
        self.rewards = self.objective.rewards
        self.base_steps = int(cfg.post.refine_rlhf.base_steps)
        self.eval_prompts = list(inputs.eval_prompts)

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**super().checkpoint_extra(), "refine_rlhf": {
            "method": "refl", "refiner": str(self.refiner_path), "refiner_step": self.refiner_step,
            "lowres": "base_sample", **section_dict(self.cfg.post.rlhf),
            **section_dict(self.cfg.post.refine_rlhf)}}

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

    def _with_lowres(self, m: nn.Module, lowres: Tensor) -> Any:
        fn = velocity_fn(m)
        return lambda x, t, kw: fn(x, t, {**kw, "lowres": lowres})

    def rollout(self, mb: Batch) -> Rollout:
        """The refiner policy and reference conditioned on the frozen base's low-res sample."""
        hi, lo = self.shapes()
        gens = self.sample_generators(mb)
        noise_lo = torch.cat([torch.randn((1, *lo), generator=g) for g in gens])
        noise_hi = torch.cat([torch.randn((1, *hi), generator=g) for g in gens])
        texts = self.text_inputs(mb, None, 0.0)["texts"]
        lowres = self.base_lowres(texts, noise_lo)
        uncond = {"texts": [""] * len(texts)} if self.objective.cfg_scale != 1.0 else None
        return Rollout(self._with_lowres(self.model, lowres), self._with_lowres(self.reference, lowres),
                       noise_hi.to(self.device), {"texts": texts}, texts,
                       sampling_shift(self.cfg, noise_hi.shape[1:]), uncond)

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        return self.objective.step(self, micro_batches, gen, self.rollout)

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
        lowres = self.base_lowres(list(prompts), noise_lo)
        with self.autocast():
            x0, _, _ = refl_rollout(self._with_lowres(self.net, lowres), noise_hi.to(self.device),
                                    {"texts": list(prompts)}, self.objective.sample_steps, 1, None,
                                    sampling_shift(self.cfg, noise_hi.shape[1:]))
            video = decode_video(self.vae, self.stats, x0)
        self.net.train(was)
        terms = {k: v.float().cpu() for k, v in self.rewards.terms(video, list(prompts)).items()}
        terms["composite"] = self.rewards.combine(terms).float().cpu()
        return terms

    def evaluate(self) -> dict[str, float]:
        return reward_stats(self.score(self.eval_prompts), prefix="eval") if self.eval_prompts else {}


def refiner_rlhf_config(refiner_ckpt: str | Path, overrides: Layers = None) -> TrainConfig:
    """``rlhf_config`` over a refiner checkpoint's config (its stage) for ``post.refine_rlhf.steps``."""
    path, state = _load_refiner_ckpt(refiner_ckpt)
    cfg = rlhf_config(path, lambda post: post.refine_rlhf.steps, overrides=overrides)
    cfg.post.refine = refiner_settings(state)
    return cfg


def refiner_rlhf(refiner_ckpt: str | Path, out: str | Path, prompts: Sequence[str] | None = None,
                 data: str | Path | None = None, reward_models: Mapping[str, Reward] | None = None,
                 eval_prompts: Sequence[str] = (), overrides: Layers = None, progress: bool = True,
                 device: str | None = None, cfg: TrainConfig | None = None, **settings: Any) -> dict[str,
                                                                                                     Any]:
    """``vidloom post refine-rlhf``: ReFL on a refiner (the refiner's stage size and frames); resumes.
    ``cfg`` defaults to ``refiner_rlhf_config`` with ``settings`` (``steps``, ``base_steps``:
    ``post.refine_rlhf``; ``rewards``, ``beta``, ``lr``, ``global_batch``, ...: ``post.rlhf``), then
    ``overrides``. Returns ``{"out", "checkpoint", "refiner", "summary"}``."""
    path, _ = _load_refiner_ckpt(refiner_ckpt)
    if cfg is None:
        post = settings_tree(settings, {"refine_rlhf": ("steps", "base_steps")})
        cfg = refiner_rlhf_config(path, [{"post": post},
                                         *([overrides] if isinstance(overrides, dict) else overrides or [])])
    inputs = RunInputs(path, data=data, prompts=prompts, reward_models=dict(reward_models or {}),
                       eval_prompts=list(eval_prompts))
    trainer = RefinerRLHFTrainer(cfg, inputs, out, device=device)
    summary = trainer.train(progress)
    return {"out": str(out), "checkpoint": str(latest_checkpoint(out)), "refiner": str(path),
            "summary": summary}


__all__ = ["RefinerRLHFTrainer", "RefinerSFTTrainer", "refiner_rlhf", "refiner_sft"]
