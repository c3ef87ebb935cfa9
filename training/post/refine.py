"""Cascade super-resolution refiner (docs/architecture.md "DiT", cascade): a DiT that turns a low-res
latent into a high-res one, initialised from a trained base "dit" checkpoint.

Model: ``RefinerDiT`` is the base ``DiT`` (same ``DiTConfig``, so the same weights load) whose patch
embedding takes ``extra_channels`` more input channels: the normalised low-res latent, upsampled
(``upsample_latent``: nearest or trilinear, in latent space) to the high-res latent grid and
channel-concatenated after ``[x_t, cond * mask, mask]``. The base weights fill the first columns of
the widened patch embedding and the new columns start at zero, so at initialisation the refiner
computes exactly what the base DiT computes (``tests/test_refine.py``). ``RefinerNet`` is ``DiTNet``
with that DiT: the state-dict keys (``dit.*``, ``text.*``) are the base's, only
``dit.patch_embed.weight`` is wider.

Training (``RefinerTrainer``, checkpoint kind "refiner"): per sample, the stage's pixels (the high
resolution, e.g. 64x128) give ``z_hi`` (frozen VAE of the base checkpoint, posterior mean,
normalised) and the same pixels box-downsampled by ``scale`` (2) give ``z_lo``; the loss is the base
DiT's flow-matching loss on ``z_hi`` with ``lowres=z_lo`` (plus a little Gaussian noise on ``z_lo``,
``lowres_noise``, so the refiner tolerates an imperfect base sample). Text, caption dropout and the
timestep distribution are the base trainer's; there is no image-to-video conditioning. The
checkpoint records the base under ``refiner``: path, step, scale, extra channels, upsampling mode.

Generation (``refine_latent``, called by ``training.inference.generate.generate(..., refine=...)``): the base
samples the low-res latent (size / scale), the refiner samples the high-res latent from fresh noise
conditioned on it, and the refiner's VAE decodes it.

``refine_preset(base_cfg)`` is the "refine" preset: the base checkpoint's config (DiT, VAE and text
encoder must stay the base's) with one high-resolution stage and refiner optimisation settings.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.dit.model import DiT, DiTConfig, sample
from models.text_encoder import TextEncoder, build_text_encoder
from models.vae.causal_vae import VAE
from training.config import (  # noqa: F401  (apply_overrides re-exported)
    Layers,
    StageConfig,
    TrainConfig,
    apply_layers,
    apply_overrides,
    from_dict,
)
from training.inference.sampling_setup import Timer
from training.loop.checkpoint import LatentStats, load_checkpoint, load_vae, resolve_checkpoint, sub_state
from training.loop.distributed import DistInfo
from training.loop.dit_trainer import EVAL_T, DiTNet, DiTTrainer
from training.loop.flow_matching import flow_matching_loss, logit_normal_t, resolution_shift, shift_t
from training.loop.trainer import Batch
from training.loop.vae_trainer import trim_frames
from training.post.config import PostConfig, RefineConfig, section_dict
from training.post.inputs import RunInputs

SCALE = 2
UPSAMPLE_MODES = ("nearest", "trilinear")


# --------------------------------------------------------------------------- config


def refine_preset(base: TrainConfig, rc: RefineConfig | None = None, **settings: Any) -> TrainConfig:
    """The "refine" preset: ``base`` (the base checkpoint's config) with one high-res stage and the
    refiner's schedule, from ``rc`` (default ``base.post.refine``) with ``settings`` (``size=``,
    ``n_frames=``, ... : ``post.refine`` keys) replaced; the result's ``post.refine`` records them.

    The stage's ``size`` is the refiner's output size; the base runs at ``size / SCALE``.
    """
    rc = dataclasses.replace(rc or base.post.refine, **{k: v for k, v in settings.items() if v is not None})
    cfg = dataclasses.replace(base)
    cfg.post = dataclasses.replace(base.post, refine=rc)
    cfg.stages = [StageConfig("refine", 1.0, n_frames=rc.n_frames, size=tuple(rc.size), fps=rc.fps,
                              global_batch=4, i2v_share=0.0, sample_mode="uniform")]
    cfg.steps = rc.steps
    cfg.lr = rc.lr
    cfg.warmup_steps = 10
    cfg.ckpt_every = 50
    return cfg


def refine_config(base_ckpt: str | Path, overrides: Layers = None) -> TrainConfig:
    """The config of a refiner run: the base checkpoint's, fresh ``post`` settings with ``overrides``,
    the "refine" preset from ``post.refine``, then ``overrides`` again (a top-level key wins)."""
    cfg = from_dict(load_checkpoint(resolve_checkpoint(base_ckpt))["config"])
    cfg.post = PostConfig()
    apply_layers(cfg, overrides)
    return apply_layers(refine_preset(cfg), overrides)


def refiner_settings(ckpt: dict[str, Any]) -> RefineConfig:
    """The ``post.refine`` settings of a "refiner" checkpoint: from its stored config (older
    checkpoints: from their ``refiner`` entry)."""
    post = ckpt["config"].get("post", {}).get("refine")
    if post is None:
        info = ckpt["refiner"]
        return RefineConfig(upsample=info.get("upsample", "trilinear"),
                            lowres_noise=float(info.get("lowres_noise", 0.1)))
    return from_dict(ckpt["config"]).post.refine


# --------------------------------------------------------------------------- model


def upsample_latent(z: torch.Tensor, thw: tuple[int, int, int], mode: str = "nearest") -> torch.Tensor:
    """[B, C, T, h, w] -> [B, C, T', H, W] latent-space upsampling (``nearest`` or ``trilinear``)."""
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample mode must be one of {UPSAMPLE_MODES}, got {mode!r}")
    if tuple(z.shape[2:]) == tuple(thw):
        return z
    if mode == "nearest":
        return F.interpolate(z, size=tuple(thw), mode="nearest")
    return F.interpolate(z, size=tuple(thw), mode="trilinear", align_corners=False)


def downsample_pixels(video: torch.Tensor, scale: int = SCALE) -> torch.Tensor:
    """[B, 3, T, H, W] -> [B, 3, T, H/scale, W/scale] by box averaging (anti-aliased)."""
    if video.shape[-1] % scale or video.shape[-2] % scale:
        raise ValueError(f"size {tuple(video.shape[-2:])} is not divisible by the scale {scale}")
    return F.avg_pool3d(video, kernel_size=(1, scale, scale))


class RefinerDiT(DiT):
    """``DiT`` with ``extra_channels`` more input channels: the upsampled low-res latent.

    ``forward(..., lowres=z_lo)`` takes the low-res latent on its own grid (it is upsampled here to
    x_t's grid with ``upsample``) or already on x_t's grid.
    """

    def __init__(self, cfg: DiTConfig, extra_channels: int, upsample: str = "nearest") -> None:
        super().__init__(cfg)
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample mode must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.extra_channels, self.upsample = extra_channels, upsample
        pv = cfg.patch_volume
        self.patch_embed = nn.Linear((cfg.input_channels + extra_channels) * pv, cfg.dim)
        with torch.no_grad():  # the low-res columns start at zero (a fresh DiT: random base columns)
            self.patch_embed.weight[:, cfg.input_channels * pv:] = 0.0
        self._lowres: torch.Tensor | None = None

    @torch.no_grad()
    def load_base(self, state: dict[str, torch.Tensor]) -> None:
        """Load a base ``DiT`` state dict: its patch embedding fills the first columns, the rest are 0."""
        state = dict(state)
        w = state.pop("patch_embed.weight")
        missing, unexpected = super().load_state_dict(state, strict=False)
        if unexpected or set(missing) != {"patch_embed.weight"}:
            raise ValueError(f"base DiT state does not fit: missing {missing}, unexpected {unexpected}")
        if w.shape[0] != self.patch_embed.weight.shape[0] or w.shape[1] != self.cfg.input_channels * \
                self.cfg.patch_volume:
            raise ValueError(f"base patch embedding {tuple(w.shape)} does not fit {self.cfg}")
        self.patch_embed.weight.zero_()
        self.patch_embed.weight[:, : w.shape[1]] = w

    def _with_condition(self, x_t: torch.Tensor, cond: torch.Tensor | None,
                        cond_mask: torch.Tensor | None) -> torch.Tensor:
        x = super()._with_condition(x_t, cond, cond_mask)
        if self._lowres is None:
            raise ValueError("the refiner needs lowres= (the low-res latent)")
        low = upsample_latent(self._lowres.to(x), tuple(x_t.shape[2:]), self.upsample)
        if low.shape[1] != self.extra_channels or low.shape[0] != x.shape[0]:
            raise ValueError(f"lowres {tuple(self._lowres.shape)} does not fit x_t {tuple(x_t.shape)} "
                             f"({self.extra_channels} channels)")
        return torch.cat([x, low], dim=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, *args: Any,
                lowres: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        self._lowres = lowres
        try:
            return super().forward(x_t, t, text, *args, **kwargs)
        finally:
            self._lowres = None


class RefinerNet(DiTNet):
    """``DiTNet`` whose DiT is a ``RefinerDiT``; same state-dict keys as the base ``DiTNet``."""

    def __init__(self, cfg: TrainConfig, extra_channels: int | None = None,
                 upsample: str = "trilinear") -> None:
        super().__init__(cfg)
        extra = cfg.vae.latent_channels if extra_channels is None else extra_channels
        self.dit = RefinerDiT(cfg.dit, extra, upsample)

    def load_base(self, weights: dict[str, torch.Tensor]) -> None:
        """Load a base "dit" checkpoint's ``net``/``ema`` dict (``dit.*`` and maybe ``text.*``)."""
        self.dit.load_base(sub_state(weights, "dit"))
        text = sub_state(weights, "text")
        if self.frozen_text is None:
            self.text.load_state_dict(text)


# --------------------------------------------------------------------------- training


class RefinerTrainer(DiTTrainer):
    """Flow matching on the high-res latent conditioned on the upsampled low-res latent."""

    kind = "refiner"

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None, use_ema: bool = True) -> None:
        self.base_path = resolve_checkpoint(inputs.base)
        base = load_checkpoint(self.base_path)
        if base.get("kind") != "dit":
            raise ValueError(f"{inputs.base} is a {base.get('kind')!r} checkpoint; the refiner starts from a "
                             "'dit' one")
        base_cfg = from_dict(base["config"])
        for part in ("dit", "vae", "text"):
            if getattr(base_cfg, part) != getattr(cfg, part):
                raise ValueError(f"the refiner's {part} config must be the base's ({self.base_path})")
        for st in cfg.stages:
            if st.size[0] % SCALE or st.size[1] % SCALE:
                raise ValueError(f"stage {st.name} size {st.size} is not divisible by the scale {SCALE}")
        self.base_weights = base["ema" if use_ema else "net"]
        self.base_step = int(base["step"])
        self.upsample, self.lowres_noise = cfg.post.refine.upsample, float(cfg.post.refine.lowres_noise)
        super().__init__(cfg, inputs.data or "", out, self.base_path, device, dist)
        self.base_weights = {}  # loaded into the net; free the memory

    def build_net(self) -> nn.Module:
        net = RefinerNet(self.cfg, upsample=self.upsample)
        net.load_base(self.base_weights)
        return net

    def checkpoint_extra(self) -> dict[str, Any]:
        info = {"base": str(self.base_path), "base_step": self.base_step, "scale": SCALE,
                "extra_channels": self.net.dit.extra_channels, **section_dict(self.cfg.post.refine)}
        return {**super().checkpoint_extra(), "refiner": info}

    @torch.no_grad()
    def latent_pair(self, mb: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_hi, z_lo): normalised latents of the pixels and of the pixels downsampled by SCALE."""
        if "video" not in mb:
            raise ValueError("the refiner trains on pixel shards (it encodes two resolutions)")
        video = trim_frames(mb["video"], self.cfg.vae.downsample[0]).to(self.device)
        with self.autocast():
            z_hi = self.vae.encode(video).mean.float()
            z_lo = self.vae.encode(downsample_pixels(video)).mean.float()
        return self.stats.normalize(z_hi), self.stats.normalize(z_lo)

    def _refine_loss(self, z_hi: torch.Tensor, z_lo: torch.Tensor, kwargs: dict[str, Any], t: torch.Tensor,
                     noise: torch.Tensor) -> torch.Tensor:
        kwargs = {**kwargs, "lowres": z_lo}
        with self.autocast():
            loss, _ = flow_matching_loss(_velocity(self.model), z_hi, kwargs, t=t, noise=noise)
        return loss

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        n = sum(len(mb["key"]) for mb in micro_batches)
        total = 0.0
        for i, mb in enumerate(micro_batches):
            z_hi, z_lo = self.latent_pair(mb)
            b = z_hi.shape[0]
            gens = self.sample_generators(mb)
            kwargs = self.text_inputs(mb, gens, self.cfg.text_dropout)
            t = shift_t(torch.cat([logit_normal_t(1, generator=g) for g in gens]), self._shift(z_hi))
            noise = torch.cat([torch.randn((1, *z_hi.shape[1:]), generator=g) for g in gens])
            if self.lowres_noise > 0:
                sigma = torch.cat([torch.rand(1, generator=g) for g in gens]) * self.lowres_noise
                eps = torch.cat([torch.randn((1, *z_lo.shape[1:]), generator=g) for g in gens])
                z_lo = z_lo + (sigma.view(b, 1, 1, 1, 1) * eps).to(z_lo)
            with self.no_sync(last=i == len(micro_batches) - 1):
                loss = self._refine_loss(z_hi, z_lo, kwargs, t.to(self.device), noise.to(self.device))
                (loss * b / n).backward()
            total += float(loss.detach()) * b
        return {"loss": total / n}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Refiner flow-matching loss on the first ``eval_samples`` samples at ``EVAL_T``, fixed noise."""
        losses = []
        for index, mb in self.eval_batches():
            z_hi, z_lo = self.latent_pair(mb)
            kwargs = self.text_inputs(mb, None, 0.0)
            g = torch.Generator().manual_seed(10_000 + index)
            for t in EVAL_T:
                noise = torch.randn(z_hi.shape, generator=g).to(self.device)
                tt = torch.full((1,), t, device=self.device)
                losses.append(float(self._refine_loss(z_hi, z_lo, kwargs, tt, noise)))
        return {"eval_loss": sum(losses) / max(len(losses), 1)}


def _velocity(model: Any) -> Any:
    def fn(x_t: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        return model(x_t, t, **kwargs)

    return fn


def train_refiner(base_ckpt: str | Path, data: str | Path, out: str | Path, steps: int | None = None,
                  overrides: Layers = None, size: tuple[int, int] | None = None,
                  n_frames: int | None = None, device: str | None = None, progress: bool = True,
                  upsample: str | None = None, lowres_noise: float | None = None) -> dict[str, Any]:
    """``vidloom post refine``: ``refine_config`` (the keywords given set those ``post.refine`` keys,
    ``overrides`` after them), then train (resumes)."""
    given = {"steps": steps, "size": None if size is None else list(size), "n_frames": n_frames,
             "upsample": upsample, "lowres_noise": lowres_noise}
    keywords = {"post": {"refine": {k: v for k, v in given.items() if v is not None}}}
    cfg = refine_config(base_ckpt, [keywords, *([overrides] if isinstance(overrides,
                                                                          dict) else overrides or [])])
    return run_refiner(cfg, RunInputs(base_ckpt, data=data), out, device=device, progress=progress)


def run_refiner(cfg: TrainConfig, inputs: RunInputs, out: str | Path, device: str | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a refiner with the resolved ``cfg``; the summary names the checkpoint."""
    from training.loop.checkpoint import latest_checkpoint

    summary = RefinerTrainer(cfg, inputs, out, device=device).train(progress)
    summary["checkpoint"] = str(latest_checkpoint(out))
    return summary


# --------------------------------------------------------------------------- generation


@dataclass
class RefinerPipeline:
    """What the cascade needs from a "refiner" checkpoint."""

    config: TrainConfig
    dit: RefinerDiT
    vae: VAE
    text_encoder: TextEncoder
    latent_stats: LatentStats
    step: int
    scale: int
    info: dict[str, Any]
    source: str = ""

    def low_size(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = size
        if h % self.scale or w % self.scale:
            raise ValueError(f"size {size} is not divisible by the refiner's scale {self.scale}")
        return h // self.scale, w // self.scale


def load_refiner(path: str | os.PathLike[str], use_ema: bool = True, device: str | torch.device = "cpu"
                 ) -> RefinerPipeline:
    """Rebuild the refiner DiT, its text encoder and its (frozen) VAE from a "refiner" checkpoint."""
    ckpt = load_checkpoint(resolve_checkpoint(path))
    if ckpt.get("kind") != "refiner":
        raise ValueError(f"{path} is a {ckpt.get('kind')!r} checkpoint; refine= needs a 'refiner' one")
    cfg = from_dict(ckpt["config"])
    info = dict(ckpt["refiner"])
    weights = ckpt["ema" if use_ema else "net"]
    dit = RefinerDiT(cfg.dit, int(info["extra_channels"]), refiner_settings(ckpt).upsample)
    dit.load_state_dict(sub_state(weights, "dit"))
    text = build_text_encoder(cfg.text)
    if isinstance(text, nn.Module):
        text.load_state_dict(sub_state(weights, "text"))
        text.to(device).eval().requires_grad_(False)
    vae, stats = load_vae(path, use_ema=use_ema)
    dit.to(device).eval().requires_grad_(False)
    return RefinerPipeline(cfg, dit, vae.to(device), text, stats, int(ckpt["step"]), int(info["scale"]), info,
                           str(resolve_checkpoint(path)))


def as_refiner(refine: Any, device: str | torch.device = "cpu") -> RefinerPipeline:
    """A ``RefinerPipeline`` as is, or load one from a checkpoint path / run directory."""
    return refine if isinstance(refine, RefinerPipeline) else load_refiner(refine, device=device)


@torch.no_grad()
def refine_latent(refiner: RefinerPipeline, z_lo: torch.Tensor, prompt: str, thw: tuple[int, int, int],
                  steps: int = 30, cfg_scale: float = 4.0, seed: int = 0, heun: bool = False,
                  negative_prompt: str = "", timer: Any = None, autocast: Any = None) -> torch.Tensor:
    """Sample the normalised high-res latent [1, C, T, H, W] (grid ``thw``) given the normalised low-res
    latent ``z_lo`` (refiner's statistics) with the refiner; noise from ``seed``."""
    import contextlib

    timer = timer or Timer()
    cfg = refiner.config
    device = next(refiner.dit.parameters()).device
    shape = (z_lo.shape[0], cfg.dit.in_channels, *thw)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))).to(device)

    def text_kwargs(caption: str) -> dict[str, Any]:
        with timer.section("text_s"):
            emb, mask = refiner.text_encoder.encode([caption])
            return {"text": emb.float().to(device), "text_mask": mask.to(device), "lowres": z_lo.to(device)}

    kwargs = text_kwargs(prompt)
    uncond = text_kwargs(negative_prompt) if cfg_scale != 1.0 else None
    shift = 1.0
    if cfg.timestep_shift:
        pt, ph, pw = cfg.dit.patch
        shift = resolution_shift((thw[0] // pt) * (thw[1] // ph) * (thw[2] // pw))
    with autocast or contextlib.nullcontext(), timer.section("refiner_s"):
        z = sample(timer.counted(refiner.dit, "refiner_passes"), noise, kwargs, steps, shift=shift,
                   cfg_scale=cfg_scale, uncond_kwargs=uncond, heun=heun)
    return z.float()


def base_to_refiner_latent(z: torch.Tensor, base_stats: LatentStats,
                           refiner: RefinerPipeline) -> torch.Tensor:
    """Re-normalise a base latent with the refiner's statistics (equal when both share the VAE)."""
    return refiner.latent_stats.normalize(base_stats.denormalize(z))
