"""Causal 3D-conv video VAE (Seedance 1.0, §2.1): an image is a one-frame video."""

from models.vae.causal_vae import VAE, CausalConv3d, DiagonalGaussian, VAEConfig
from models.vae.losses import (
    PatchDiscriminator3d,
    PerceptualDistance,
    VAELoss,
    discriminator_hinge_loss,
    vae_loss,
)

__all__ = [
    "VAE",
    "CausalConv3d",
    "DiagonalGaussian",
    "PatchDiscriminator3d",
    "PerceptualDistance",
    "VAEConfig",
    "VAELoss",
    "discriminator_hinge_loss",
    "vae_loss",
]
