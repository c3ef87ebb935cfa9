"""Thin VAE decoder: a narrower ``Decoder`` retrained against a frozen VAE, for faster decoding.

``thin_vae_config(cfg, width)`` scales every level's channels by ``width`` (0.5 = half; at least 1);
latent channels, compression and residual blocks stay the VAE's, so the thin decoder reads the same
latents and returns the same shape ``[B, 3, 1 + dt (T'-1), ds H', ds W']`` as the full decoder.

Training (``ThinDecoderTrainer``, checkpoint kind "thin_decoder", the shared ``Trainer`` loop on the
VAE run's ``vae_stage`` and ``vae_lr``): the frozen encoder gives the posterior mean z of each clip,
the frozen full decoder its reconstruction; the loss is ``L1(thin(z), pixels) + full_weight *
(L1(thin(z), full(z)) + L1(thin(z'), full(z')))`` where ``z' = z + sigma * std * eps`` with
``sigma ~ U(0, perturb)`` per sample and ``std`` the latent's per-channel std.

Why the perturbed term: the thin decoder decodes *generated* latents, which lie off the encoder's
posterior means; trained on posterior means alone it matched the full decoder there (L1 0.05) but
not on a distilled student's latents (18 dB). The full decoder is the teacher on any z, so the
thin decoder is distilled on a neighbourhood of the data. On the demo VAE (200 steps, PSNR against
the full decoder on TSCD-4 latents) this took 19.1 dB to 20.4 dB (``perturb=2``; 20.0 dB at 1).
``init="slice"`` starts every tensor from the leading channels of the full decoder's (input dims
rescaled to keep activation scale); at the tiny VAE's widths (4 -> 2 channels) it started and ended
worse than random weights (17.1 dB), so random is the default.

``generator=`` (a "dit" run whose VAE this is, typically the few-step student that will be served)
adds the term that matters most: each step the generator samples latents for the batch's captions
(``generator_steps`` steps, ``guidance``; fresh noise) and the thin decoder is distilled on those too,
``full_weight * L1(thin(z_gen), full(z_gen))``. In an offline check on the demo's TSCD-4 student, 300
such steps took a perturb-trained thin decoder from 20.4 to 26.5 dB against the full decoder on
held-out generated latents.

The checkpoint stores the thin decoder (``net``/``ema``: ``decoder.*``), the VAE checkpoint's config
and ``thin``: width, channels, the VAE path. ``generate(..., thin_decoder=)`` loads it with
``load_thin_decoder``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.vae.causal_vae import Decoder, VAEConfig
from training.config import Layers, StageConfig, TrainConfig, apply_layers, from_dict
from training.loop.checkpoint import load_checkpoint, load_vae, resolve_checkpoint, sub_state
from training.loop.distributed import DistInfo
from training.loop.trainer import Batch, Trainer
from training.loop.vae_trainer import trim_frames
from training.post.config import PostConfig, section_dict
from training.post.distill_eval import Prompts, _shift, run_sampler
from training.post.inputs import RunInputs


def thin_vae_config(cfg: VAEConfig, width: float = 0.5) -> VAEConfig:
    """``cfg`` with every level's channels scaled by ``width`` (rounded, at least 1)."""
    if not 0 < width:
        raise ValueError(f"width must be > 0, got {width}")
    return dataclasses.replace(cfg, channels=tuple(max(1, round(c * width)) for c in cfg.channels))


class ThinDecoderNet(nn.Module):
    """``forward(z)`` -> pixels with the thin ``Decoder`` (key prefix ``decoder.``)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.decoder = Decoder(cfg)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


@torch.no_grad()
def init_from_full(thin: nn.Module, full: nn.Module) -> None:
    """Copy every tensor's leading slice from ``full`` (same module structure, narrower channels).

    A weight of rank >= 2 has its input dim (dim 1) cut from ``n`` to ``k`` channels, so it is scaled
    by ``n / k`` to keep each output's expected magnitude. Tensors of equal shape are copied as is.
    """
    source = full.state_dict()
    for name, tensor in thin.state_dict().items():
        src = source[name]
        part = src[tuple(slice(0, n) for n in tensor.shape)].clone()
        if tensor.dim() >= 2 and src.shape[1] != tensor.shape[1]:
            part *= src.shape[1] / tensor.shape[1]
        tensor.copy_(part)


def _compatible(a: VAEConfig, b: VAEConfig) -> bool:
    return (a.latent_channels, tuple(a.downsample), a.in_channels) == (b.latent_channels, tuple(b.downsample),
                                                                      b.in_channels)


class ThinDecoderTrainer(Trainer):
    """The thin decoder against ``inputs.base`` (a VAE or DiT checkpoint), settings
    ``cfg.post.thin_decoder``; ``inputs.generator``: the optional "dit" run of the generated term."""

    kind = "thin_decoder"

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None) -> None:
        t = cfg.post.thin_decoder
        if t.init not in ("slice", "random"):
            raise ValueError(f"post.thin_decoder.init must be 'slice' or 'random', got {t.init!r}")
        width, vae_ckpt, data, generator = t.width, inputs.base, inputs.data or "", inputs.generator
        self.width, self.full_weight, self.perturb = float(width), float(t.full_weight), float(t.perturb)
        self.init = t.init
        self.thin_cfg = thin_vae_config(cfg.vae, width)
        self.vae_path = resolve_checkpoint(vae_ckpt)
        self.vae, self.stats = load_vae(self.vae_path)
        if self.vae.cfg != cfg.vae:
            raise ValueError(f"the VAE in {vae_ckpt} has config {self.vae.cfg}, this run expects {cfg.vae}")
        super().__init__(cfg, data, out, device, dist)
        self.vae.to(self.device)
        self.latent_std = self.stats.std.to(self.device).view(1, -1, 1, 1, 1)
        self.generator_path, self.generator_steps = generator, int(t.generator_steps)
        self.guidance = t.guidance
        self.gen_pipe = None
        if generator is not None:
            from training.loop.checkpoint import load_pipeline

            self.gen_pipe = load_pipeline(generator, device=self.device)
            if self.gen_pipe.vae.cfg != cfg.vae:
                raise ValueError(f"the generator {generator} uses VAE {self.gen_pipe.vae.cfg}, not {cfg.vae}")

    @property
    def base_lr(self) -> float:
        return self.cfg.vae_lr

    def stage_plan(self) -> list[tuple[StageConfig, int, int]]:
        return [(self.cfg.vae_stage, 0, self.cfg.steps)]

    def build_net(self) -> nn.Module:
        net = ThinDecoderNet(self.thin_cfg)
        if self.init == "slice":
            init_from_full(net.decoder, self.vae.decoder)
        return net

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"thin": {"channels": list(self.thin_cfg.channels), "vae": str(self.vae_path),
                         "generator": None if self.gen_pipe is None else str(self.generator_path),
                         **section_dict(self.cfg.post.thin_decoder)}}

    @torch.no_grad()
    def generated(self, mb: Batch, like: torch.Tensor, gen: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_gen, full(z_gen)): latents the generator samples for the batch's English captions (fresh
        noise from ``gen``, shaped like ``like``), unnormalised, and the full decoder's output."""
        pipe = self.gen_pipe
        assert pipe is not None
        captions = [c or "" for c in (mb.get("caption_en") or [""] * like.shape[0])]
        noise = torch.randn(like.shape, generator=gen).to(self.device)
        prompts = Prompts.encode(pipe.text_encoder, captions, self.device)
        with self.autocast():
            z = run_sampler(pipe.dit, noise, prompts, torch.arange(len(captions)), self.generator_steps,
                            self.guidance, shift=_shift(pipe, tuple(noise.shape))).float()
            z = pipe.latent_stats.denormalize(z)
            return z, self.vae.decode(z).float()

    @torch.no_grad()
    def perturbed(self, z: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(z', full(z')): z moved by up to ``perturb`` latent stds, and the full decoder's output there."""
        sigma = torch.rand(z.shape[0], generator=gen).view(-1, 1, 1, 1, 1) * self.perturb
        eps = torch.randn(z.shape, generator=gen)
        z_p = z + sigma.to(z.device) * self.latent_std * eps.to(z.device)
        with self.autocast():
            return z_p, self.vae.decode(z_p).float()

    @torch.no_grad()
    def targets(self, mb: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pixels, posterior mean z, full decoder's reconstruction) of a micro-batch."""
        x = trim_frames(mb["video"], self.cfg.vae.downsample[0]).to(self.device)
        with self.autocast():
            z = self.vae.encode(x).mean.float()
            full = self.vae.decode(z).float()
        return x, z, full

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        n = sum(len(mb["key"]) for mb in micro_batches)
        sums = {"loss": 0.0, "l1": 0.0, "l1_full": 0.0, "l1_perturbed": 0.0, "l1_generated": 0.0}
        for i, mb in enumerate(micro_batches):
            x, z, full = self.targets(mb)
            z_p, full_p = self.perturbed(z, gen) if self.perturb > 0 else (None, None)
            z_g, full_g = self.generated(mb, z, gen) if self.gen_pipe is not None else (None, None)
            b = x.shape[0]
            with self.no_sync(last=i == len(micro_batches) - 1), self.autocast():
                out = self.model(z).float()
                l1 = (out - x).abs().mean()
                l1_full = (out - full).abs().mean()
                l1_p = (self.model(z_p).float() - full_p).abs().mean() if z_p is not None else l1_full * 0
                l1_g = (self.model(z_g).float() - full_g).abs().mean() if z_g is not None else l1_full * 0
                loss = l1 + self.full_weight * (l1_full + l1_p + l1_g)
                (loss * b / n).backward()
            for k, v in (("loss", loss), ("l1", l1), ("l1_full", l1_full), ("l1_perturbed", l1_p),
                         ("l1_generated", l1_g)):
                sums[k] += float(v.detach()) * b
        return {k: v / n for k, v in sums.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean L1 of the thin decoder to the pixels and to the full decoder on the first samples."""
        l1, l1_full, l1_p, l1_g = [], [], [], []
        gen = torch.Generator().manual_seed(self.cfg.seed)  # the same draws at every evaluation
        for _, mb in self.eval_batches():
            x, z, full = self.targets(mb)
            out = self.model(z).float()
            l1.append(float((out - x).abs().mean()))
            l1_full.append(float((out - full).abs().mean()))
            z_p, full_p = self.perturbed(z, gen)
            l1_p.append(float((self.model(z_p).float() - full_p).abs().mean()))
            if self.gen_pipe is not None:
                z_g, full_g = self.generated(mb, z, gen)
                l1_g.append(float((self.model(z_g).float() - full_g).abs().mean()))
        k = max(len(l1), 1)
        metrics = {"eval_l1": sum(l1) / k, "eval_l1_full": sum(l1_full) / k,
                   "eval_l1_perturbed": sum(l1_p) / k}
        if l1_g:
            metrics["eval_l1_generated"] = sum(l1_g) / len(l1_g)
        return metrics


def thin_decoder_config(vae_ckpt: str | Path, steps: int | None = None,
                        overrides: Layers = None) -> TrainConfig:
    """The VAE checkpoint's config (``vae_stage``, ``vae_lr``) with fresh ``post`` settings,
    ``steps`` (default its ``vae_steps``) and ``--set`` overrides."""
    cfg = from_dict(load_checkpoint(resolve_checkpoint(vae_ckpt))["config"])
    cfg.post = PostConfig()
    cfg.steps = cfg.vae_steps if steps is None else int(steps)
    return apply_layers(cfg, overrides)


def train_thin_decoder(vae_ckpt: str | Path, data: str | Path, out: str | Path, steps: int | None = None,
                       overrides: Layers = None, generator: str | Path | None = None,
                       device: str | None = None, progress: bool = True, cfg: TrainConfig | None = None,
                       **settings: Any) -> dict[str, Any]:
    """``vidloom post thin-decoder``: train (or resume) a thin decoder for the VAE of ``vae_ckpt``, with
    ``cfg`` (default: ``thin_decoder_config`` with ``settings``, ``post.thin_decoder`` keys, then
    ``overrides``)."""
    from training.loop.checkpoint import latest_checkpoint

    if cfg is None:
        given = {k: v for k, v in settings.items() if v is not None}
        cfg = thin_decoder_config(vae_ckpt, steps, [{"post": {"thin_decoder": given}},
                                                    *([overrides] if isinstance(overrides, dict) else
                                                      overrides or [])])
    inputs = RunInputs(vae_ckpt, data=data, generator=generator)
    summary = ThinDecoderTrainer(cfg, inputs, out, device=device).train(progress)
    summary["checkpoint"] = str(latest_checkpoint(out))
    return summary


def load_thin_decoder(path: str | os.PathLike[str], use_ema: bool = True,
                      device: str | torch.device = "cpu") -> tuple[Decoder, VAEConfig]:
    """The thin ``Decoder`` (eval, frozen) of a "thin_decoder" checkpoint and the full VAE's config."""
    source = resolve_checkpoint(path)
    ckpt = load_checkpoint(source)
    if ckpt.get("kind") != "thin_decoder":
        raise ValueError(f"{path} is a {ckpt.get('kind')!r} checkpoint; thin_decoder= needs a "
                         "'thin_decoder' one")
    cfg = from_dict(ckpt["config"])
    if "post" in ckpt["config"]:  # the width from the stored config
        thin_cfg = thin_vae_config(cfg.vae, cfg.post.thin_decoder.width)
    else:  # older checkpoints: the channels they recorded
        thin_cfg = dataclasses.replace(cfg.vae, channels=tuple(ckpt["thin"]["channels"]))
    decoder = Decoder(thin_cfg)
    decoder.load_state_dict(sub_state(ckpt["ema" if use_ema else "net"], "decoder"))
    decoder.to(device).eval().requires_grad_(False)
    decoder.source = str(source)  # type: ignore[assignment]
    return decoder, cfg.vae


def as_thin_decoder(obj: Any, vae_cfg: VAEConfig, device: str | torch.device = "cpu") -> nn.Module:
    """A decoder module as is, or load a "thin_decoder" checkpoint checked against ``vae_cfg``."""
    if isinstance(obj, nn.Module):
        return obj
    decoder, full_cfg = load_thin_decoder(obj, device=device)
    if not _compatible(full_cfg, vae_cfg):
        raise ValueError(f"the thin decoder {obj} was trained for a VAE with config {full_cfg}, "
                         f"not {vae_cfg}")
    return decoder
