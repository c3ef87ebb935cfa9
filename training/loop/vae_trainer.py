"""VAE training on pixel shards (docs/architecture.md "VAE"): the shared loop with the L1 + KL objective.

``vidloom train`` runs it first when no ``--vae`` is given, into ``<out>/vae``. Its checkpoints
also carry the per-channel mean and std of the posterior mean over a fixed set of training
samples (EMA weights): the DiT trains on latents normalised with them (``LatentStats``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.vae.causal_vae import VAE, DiagonalGaussian
from models.vae.losses import vae_loss
from training.config import StageConfig, TrainConfig
from training.loop.distributed import DistInfo
from training.loop.trainer import Batch, Trainer

STATS_SAMPLES = 16


def trim_frames(video: torch.Tensor, temporal_stride: int) -> torch.Tensor:
    """Keep the first ``1 + stride * k`` frames of [B, C, T, H, W] (what a causal VAE accepts)."""
    keep = 1 + temporal_stride * ((video.shape[2] - 1) // temporal_stride)
    return video[:, :, :keep]


class VAENet(nn.Module):
    """``forward(x, eps)`` -> (reconstruction, posterior mean, posterior logvar); eps drawn by the caller."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        posterior = self.vae.encode(x)
        z = posterior.mean if eps is None else posterior.mean + posterior.std * eps.to(posterior.mean)
        return self.vae.decode(z), posterior.mean, posterior.logvar


class VAETrainer(Trainer):
    kind = "vae"

    def __init__(self, cfg: TrainConfig, data: str | Path, out: str | Path,
                 device: str | torch.device | None = None, dist: DistInfo | None = None) -> None:
        super().__init__(cfg, data, out, device, dist)

    @property
    def total_steps(self) -> int:
        return self.cfg.vae_steps

    @property
    def base_lr(self) -> float:
        return self.cfg.vae_lr

    def stage_plan(self) -> list[tuple[StageConfig, int, int]]:
        return [(self.cfg.vae_stage, 0, self.cfg.vae_steps)]

    def build_net(self) -> nn.ModuleDict:
        return VAENet(VAE(self.cfg.vae))

    def _video(self, mb: Batch) -> torch.Tensor:
        return trim_frames(mb["video"], self.cfg.vae.downsample[0]).to(self.device)

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        n = sum(len(mb["key"]) for mb in micro_batches)
        sums = {"loss": 0.0, "l1": 0.0, "kl": 0.0}
        for i, mb in enumerate(micro_batches):
            x = self._video(mb)
            b = x.shape[0]
            shape = (b, self.cfg.vae.latent_channels, *self.cfg.vae.latent_shape(*x.shape[2:]))
            eps = torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in self.sample_generators(mb)])
            with self.no_sync(last=i == len(micro_batches) - 1), self.autocast():
                recon, mean, logvar = self.model(x, eps)
                loss = vae_loss(x, recon.float(), DiagonalGaussian(mean.float(), logvar.float()),
                                self.cfg.vae_kl_weight)
                (loss.total * b / n).backward()
            for k, v in (("loss", loss.total), ("l1", loss.l1), ("kl", loss.kl)):
                sums[k] += float(v.detach()) * b
        return {k: v / n for k, v in sums.items()}

    def _fixed_samples(self, count: int) -> list[torch.Tensor]:
        assert self.loader is not None
        ds = self.loader.dataset
        return [ds.get(i, self.cfg.seed, 0)["video"][None] for i in range(min(count, len(ds)))]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean L1 reconstruction error (posterior mean, current weights) on the first samples."""
        errors = []
        self.model.eval()
        for video in self._fixed_samples(self.cfg.eval_samples):
            x = self._video({"video": video})
            recon, _, _ = self.model(x)
            errors.append(float((recon.float() - x).abs().mean()))
        return {"eval_l1": sum(errors) / max(len(errors), 1)}

    @torch.no_grad()
    def latent_stats(self) -> dict[str, torch.Tensor]:
        """Per-channel mean/std of the EMA VAE's posterior mean over the first training samples."""
        vae = self.ema.vae
        samples = self._fixed_samples(STATS_SAMPLES)
        zs = [vae.encode(self._video({"video": v})).mean.float().cpu() for v in samples]
        flat = torch.cat([z.transpose(0, 1).reshape(z.shape[1], -1) for z in zs], dim=1)
        return {"mean": flat.mean(1), "std": flat.std(1).clamp_min(1e-4)}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"latent_stats": self.latent_stats()}
