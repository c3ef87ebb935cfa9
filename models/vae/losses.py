"""VAE training loss (Seedance 1.0, §2.1; docs/architecture.md "VAE"): L1 + KL + optional perceptual
and adversarial terms.

- ``vae_loss``: per-pixel L1, KL of the posterior to N(0, I) (mean per latent element), an optional
  perceptual distance (any callable ``(x, recon) -> scalar``) and an optional hinge generator term
  ``-D(recon)`` from a discriminator.
- ``PerceptualDistance``: an LPIPS-style distance (unit-normalised conv features, squared difference,
  spatial mean, summed over layers) computed per frame. Its weights are random and frozen, drawn from a
  fixed seed: a cheap, deterministic stand-in where pretrained LPIPS
  weights are not available. Off by default.
- ``PatchDiscriminator3d`` and ``discriminator_hinge_loss``: a small 3D PatchGAN scoring overlapping
  spatio-temporal patches, trained with the hinge loss (relu(1 - D(x)) + relu(1 + D(recon))).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.vae.causal_vae import DiagonalGaussian

PerceptualFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Discriminator = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class VAELoss:
    """Loss terms (scalars); ``total`` is the weighted sum that is back-propagated."""

    total: torch.Tensor
    l1: torch.Tensor
    kl: torch.Tensor
    perceptual: torch.Tensor | None = None
    adversarial: torch.Tensor | None = None


def vae_loss(
    x: torch.Tensor,
    recon: torch.Tensor,
    posterior: DiagonalGaussian,
    kl_weight: float,
    perceptual: PerceptualFn | None = None,
    adversarial: Discriminator | None = None,
    perceptual_weight: float = 1.0,
    adversarial_weight: float = 0.1,
) -> VAELoss:
    """VAE objective for one batch.

    Args:
        x: target video [B, 3, T, H, W] in [-1, 1].
        recon: reconstruction [B, 3, T, H, W].
        posterior: q(z | x) with mean/logvar [B, C, T', H', W'].
        kl_weight: weight of the KL term (KL is averaged over latent elements, not summed).
        perceptual: ``(x, recon) -> scalar`` distance, e.g. ``PerceptualDistance()``; None skips it.
        adversarial: discriminator ``video -> logits``; adds the hinge generator loss ``-mean(D(recon))``.
        perceptual_weight: weight of the perceptual term.
        adversarial_weight: weight of the adversarial term.

    Returns:
        ``VAELoss`` with the total and every term that was computed.
    """
    l1 = (x - recon).abs().mean()
    kl = posterior.kl().sum() / posterior.mean.numel()
    total = l1 + kl_weight * kl
    p = a = None
    if perceptual is not None:
        p = perceptual(x, recon)
        total = total + perceptual_weight * p
    if adversarial is not None:
        a = -adversarial(recon).mean()
        total = total + adversarial_weight * a
    return VAELoss(total=total, l1=l1, kl=kl, perceptual=p, adversarial=a)


def discriminator_hinge_loss(disc: Discriminator, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator: mean(relu(1 - D(x))) + mean(relu(1 + D(recon))); recon is detached."""
    return F.relu(1.0 - disc(x)).mean() + F.relu(1.0 + disc(recon.detach())).mean()


class PerceptualDistance(nn.Module):
    """LPIPS-style distance with random frozen conv features, applied frame by frame.

    d(x, y) = sum_l mean_{b,t,h,w} || f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)| ||^2 over channel-normalised
    features f_l of a small conv stack (3x3 convs + ReLU, stride 2 after the first layer).
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), seed: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = 3
        for i, width in enumerate(channels):
            layers.append(nn.Conv2d(ch, width, 3, stride=1 if i == 0 else 2, padding=1))
            ch = width
        self.layers = nn.ModuleList(layers)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in self.layers:
                assert isinstance(conv, nn.Conv2d)
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                conv.bias.zero_()
        self.requires_grad_(False)

    def features(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """frames [N, 3, H, W] -> per layer, unit-normalised features [N, C_l, H_l, W_l]."""
        out = []
        h = frames
        for conv in self.layers:
            h = F.relu(conv(h))
            out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: [B, 3, T, H, W] -> scalar distance (0 iff the features agree)."""
        B, C, T, H, W = x.shape
        # "b c t h w -> (b t) c h w"
        fx = self.features(x.transpose(1, 2).reshape(B * T, C, H, W))
        fy = self.features(y.transpose(1, 2).reshape(B * T, C, H, W))
        return sum(((a - b).pow(2).sum(1).mean() for a, b in zip(fx, fy, strict=True)), x.new_zeros(()))


class PatchDiscriminator3d(nn.Module):
    """3D PatchGAN: [B, 3, T, H, W] -> patch logits [B, 1, T, H / 2^n, W / 2^n] (n = len(channels)).

    Each strided layer halves H and W (kernel (3, 4, 4), stride (1, 2, 2)); a final 3x3x3 conv scores each
    patch. GroupNorm (not BatchNorm) so a logit does not depend on the rest of the batch.
    """

    def __init__(self, in_channels: int = 3, channels: tuple[int, ...] = (16, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for i, width in enumerate(channels):
            layers.append(nn.Conv3d(ch, width, (3, 4, 4), stride=(1, 2, 2), padding=1))
            if i > 0:
                layers.append(nn.GroupNorm(min(8, width), width))
            layers.append(nn.LeakyReLU(0.2))
            ch = width
        layers.append(nn.Conv3d(ch, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
