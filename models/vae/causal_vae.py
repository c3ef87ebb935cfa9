"""Causal 3D-conv video VAE (Seedance 1.0, §2.1; docs/architecture.md "VAE"): an image is a one-frame video.

Architecture choices:

- Every convolution is a ``CausalConv3d``: it pads ``k_t - 1`` frames on the past side only, by
  replicating the first frame, so output frame t never sees an input frame after t. Spatial padding is
  ordinary zero padding.
- Normalisation is a per-frame GroupNorm (statistics over C/G x H x W of one frame, never across time);
  a GroupNorm over the whole clip would leak future frames into the past.
- Downsampling ``(dt, ds, ds)`` (e.g. (4, 8, 8) or (4, 16, 16)): ``log2(ds)`` encoder levels, each halving
  H and W with a stride-2 conv; the last ``log2(dt)`` of them also halve time (kernel 3, stride 2, causal),
  so T = 1 + dt * k frames map to 1 + k latent frames and T = 1 maps to 1 latent frame.
- The decoder mirrors it: nearest 2x spatial upsampling, and causal 2x temporal upsampling that keeps the
  first frame single and repeats every later frame (1 + k -> 1 + 2k), each followed by a causal conv.
- The posterior is a diagonal Gaussian (mean, logvar) with ``latent_channels`` channels (16 small,
  48 Seedance-scale); the encoder emits 2 * latent_channels.

Consequences tested in ``tests/test_vae.py``: latent frame i depends only on input frames <= dt * i;
a T = 1 image encodes to the same latent as the first frame of any video that starts with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _log2(n: int, what: str) -> int:
    k = int(math.log2(n)) if n > 0 else -1
    if n <= 0 or 2**k != n:
        raise ValueError(f"{what} must be a power of two, got {n}")
    return k


@dataclass
class VAEConfig:
    """VAE hyper-parameters.

    Attributes:
        in_channels: pixel channels (3, RGB in [-1, 1]).
        latent_channels: channels of the latent z.
        downsample: (dt, dh, dw) total temporal/spatial compression; each a power of two, dh == dw,
            log2(dt) <= log2(dh).
        channels: encoder width per level, one level per spatial halving (len == log2(dh)); the
            decoder uses the same widths in reverse.
        res_blocks: residual blocks per level.
        logvar_clamp: (min, max) clamp of the posterior log-variance.
    """

    in_channels: int = 3
    latent_channels: int = 16
    downsample: tuple[int, int, int] = (4, 8, 8)
    channels: tuple[int, ...] = (16, 32, 32)
    res_blocks: int = 1
    logvar_clamp: tuple[float, float] = (-30.0, 20.0)

    @staticmethod
    def tiny() -> VAEConfig:
        """CPU tests and demo (~40 k params; trains a few hundred steps on 2 CPU cores in seconds)."""
        return VAEConfig(latent_channels=16, downsample=(4, 8, 8), channels=(4, 8, 8), res_blocks=1)

    @staticmethod
    def small() -> VAEConfig:
        """One-GPU experiments: (4, 8, 8), 16 latent channels."""
        return VAEConfig(latent_channels=16, downsample=(4, 8, 8), channels=(64, 128, 256), res_blocks=2)

    @staticmethod
    def seedance() -> VAEConfig:
        """Seedance-scale: (4, 16, 16) compression, 48 latent channels."""
        return VAEConfig(
            latent_channels=48, downsample=(4, 16, 16), channels=(128, 256, 512, 512), res_blocks=2
        )

    def levels(self) -> list[tuple[int, int]]:
        """Per encoder level, (width, temporal stride); validates ``downsample`` against ``channels``."""
        dt, dh, dw = self.downsample
        if dh != dw:
            raise ValueError(f"spatial downsampling must be square, got {dh}x{dw}")
        n_s, n_t = _log2(dh, "spatial downsampling"), _log2(dt, "temporal downsampling")
        if len(self.channels) != n_s:
            raise ValueError(f"channels has {len(self.channels)} levels, downsample {dh} needs {n_s}")
        if n_t > n_s:
            raise ValueError(f"temporal downsampling {dt} needs more than {n_s} levels")
        return [(c, 2 if i >= n_s - n_t else 1) for i, c in enumerate(self.channels)]

    def latent_shape(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        """(T', H', W') of the latent of a [*, *, t, h, w] video: T' = 1 + (t - 1) / dt."""
        dt, dh, dw = self.downsample
        if (t - 1) % dt or h % dh or w % dw:
            raise ValueError(f"video {(t, h, w)} needs T = 1 + {dt}k and H, W divisible by {dh}, {dw}")
        return 1 + (t - 1) // dt, h // dh, w // dw


class CausalConv3d(nn.Module):
    """3D conv that sees only the present and past frames.

    Pads ``k_t - 1`` copies of the first frame before the clip (none after) and ``k // 2`` zeros on
    each spatial side. With temporal stride s, output frame i covers input frames s*i - k_t + 1 .. s*i,
    so [B, C, T, H, W] -> [B, C', 1 + (T - 1) // s, H / s_h, W / s_w] (kernel 3, stride 1 or 2).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int, int] = 3,
        stride: tuple[int, int, int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        kt, kh, kw = (kernel,) * 3 if isinstance(kernel, int) else kernel
        self.time_pad = kt - 1
        self.conv = nn.Conv3d(in_ch, out_ch, (kt, kh, kw), stride=stride, padding=(0, kh // 2, kw // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, C', T', H', W']."""
        if self.time_pad:
            first = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
            x = torch.cat([first, x], dim=2)
        if x.device.type == "cpu" and x.shape[0] == 1:
            return self._conv_as_2d(x)
        return self.conv(x)

    def _conv_as_2d(self, x: torch.Tensor) -> torch.Tensor:
        """``self.conv(x)`` computed as one 2D conv over frames, the k_t temporal taps stacked as input
        channels; equal up to float rounding. Used on the CPU for a batch of one, where PyTorch's conv3d
        falls back to its slow im2col kernel (it takes oneDNN from batch 2 on): 4 channels at 11x64x128,
        12.1 ms -> 2.8 ms; a one-video decode of the tiny VAE 60 -> 22 ms. From batch 2 conv3d is faster
        (7.2 ms for 4 such inputs against ~11 ms folded), so it is kept there."""
        conv = self.conv
        kt, st = conv.kernel_size[0], conv.stride[0]
        B, C, T = x.shape[:3]
        t_out = (T - kt) // st + 1
        # "b c t h w" taps -> "(b t) (k c) h w"
        taps = torch.cat([x[:, :, k : k + st * (t_out - 1) + 1 : st] for k in range(kt)], dim=1)
        taps = taps.transpose(1, 2).reshape(B * t_out, kt * C, *x.shape[3:])
        weight = conv.weight.transpose(1, 2).reshape(conv.out_channels, kt * C, *conv.kernel_size[1:])
        y = F.conv2d(taps, weight, conv.bias, stride=conv.stride[1:], padding=conv.padding[1:])
        # "(b t) o h w -> b o t h w" (a view: FrameGroupNorm's permute back to frames is then free)
        return y.view(B, t_out, conv.out_channels, *y.shape[2:]).transpose(1, 2)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame: [B, C, T, H, W] normalised as [B*T, C, H, W]."""

    def __init__(self, channels: int) -> None:
        super().__init__(math.gcd(32, channels), channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        # "b c t h w -> (b t) c h w"
        y = super().forward(x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W))
        return y.view(B, T, C, H, W).permute(0, 2, 1, 3, 4)


class ResBlock3d(nn.Module):
    """(norm -> SiLU -> causal conv) x 2 + a (1x1x1-projected) skip: [B, C, T, H, W] -> [B, C', T, H, W]."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = FrameGroupNorm(in_ch), CausalConv3d(in_ch, out_ch)
        self.norm2, self.conv2 = FrameGroupNorm(out_ch), CausalConv3d(out_ch, out_ch)
        self.skip = nn.Conv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class CausalUpsample(nn.Module):
    """2x nearest in H, W and (if ``temporal``) causal 2x in time, then a causal conv.

    [B, C, 1 + k, H, W] -> [B, C, 1 + 2k, 2H, 2W]: the first frame stays single, later frames repeat twice,
    so upsampled frame f depends on input frames <= ceil(f / 2).
    """

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        if self.temporal:
            x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(2, dim=2)], dim=2)
        return self.conv(x)


class Encoder(nn.Module):
    """[B, 3, T, H, W] -> [B, 2 * latent_channels, 1 + (T-1)/dt, H/ds, W/ds] (mean and logvar stacked)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        levels = cfg.levels()
        self.conv_in = CausalConv3d(cfg.in_channels, levels[0][0])
        blocks: list[nn.Module] = []
        ch = levels[0][0]
        for width, t_stride in levels:
            for _ in range(cfg.res_blocks):
                blocks.append(ResBlock3d(ch, width))
                ch = width
            blocks.append(CausalConv3d(ch, ch, 3, stride=(t_stride, 2, 2)))
        self.blocks = nn.Sequential(*blocks)
        self.mid = ResBlock3d(ch, ch)
        self.norm_out = FrameGroupNorm(ch)
        self.conv_out = CausalConv3d(ch, 2 * cfg.latent_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.blocks(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """[B, latent_channels, T', H', W'] -> [B, 3, 1 + dt * (T'-1), ds * H', ds * W']."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        levels = cfg.levels()[::-1]
        ch = levels[0][0]
        self.conv_in = CausalConv3d(cfg.latent_channels, ch)
        self.mid = ResBlock3d(ch, ch)
        blocks: list[nn.Module] = []
        for width, t_stride in levels:
            for _ in range(cfg.res_blocks):
                blocks.append(ResBlock3d(ch, width))
                ch = width
            blocks.append(CausalUpsample(ch, temporal=t_stride == 2))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = FrameGroupNorm(ch)
        self.conv_out = CausalConv3d(ch, cfg.in_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


class DiagonalGaussian:
    """Posterior q(z | x) = N(mean, diag(exp(logvar))); mean, logvar: [B, C, T', H', W']."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        self.mean, self.logvar = mean, logvar

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised z = mean + std * eps: [B, C, T', H', W']."""
        mean = self.mean
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over C, T', H', W': [B] (nats)."""
        kl = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(1)


class VAE(nn.Module):
    """Causal video VAE: ``encode`` -> ``DiagonalGaussian``, ``decode`` -> pixels, ``forward`` -> both."""

    Config = VAEConfig

    def __init__(self, cfg: VAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or VAEConfig.tiny()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """x: [B, 3, T, H, W] in [-1, 1], T = 1 + dt * k -> posterior over [B, C_z, 1 + k, H/ds, W/ds]."""
        self.cfg.latent_shape(*x.shape[2:])
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar.clamp(*self.cfg.logvar_clamp))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: [B, C_z, T', H', W'] -> x: [B, 3, 1 + dt * (T' - 1), ds * H', ds * W']."""
        return self.decoder(z)

    def forward(
        self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """x: [B, 3, T, H, W] -> (reconstruction [B, 3, T, H, W], posterior)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior
