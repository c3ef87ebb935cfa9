"""Hand-made, differentiable proxy rewards: motion quality, structural stability, aesthetics.

Seedance 1.0 (§4, RLHF) trains reward models for foundational quality, motion and aesthetics. These
proxies stand in for them where no trained reward model exists: each is a closed-form function of the
pixels (plus, for stability, fixed random conv features), runs on CPU, downloads nothing, is bounded
in [0, 1] and is differentiable in the video, so RLHF can back-propagate through it.

- ``MotionReward`` ("motion"): amplitude x smoothness of the luma over time. Amplitude is the mean
  absolute frame difference, saturating (a / (a + a0)), so a static video scores 0. Smoothness is
  1 - E|d2| / (2 E|d1|) from the first and second temporal differences d1, d2: a constant-velocity
  pattern has d2 << d1 (-> 1); i.i.d. flicker has E|d2| / E|d1| = sqrt(3) (-> 0.13); an A/B/A/B
  flicker has |d2| = 2 |d1| (-> 0). Since |d2_t| <= |d1_t| + |d1_{t+1}|, the ratio is at most 2.
- ``StabilityReward`` ("stability"): cosine similarity of consecutive keyframes' structure
  descriptors: fixed-seed random conv features (``PerceptualDistance.features``) pooled to a coarse
  grid and centred over the grid, so a small translation barely changes the descriptor while noise or
  unrelated frames give uncorrelated ones.
- ``AestheticProxyReward`` ("aesthetic_proxy"): on the first/middle/last frame, a weighted mean of
  exposure (mean luma near 0.5), contrast (luma std) and sharpness (Laplacian RMS), each in [0, 1].

All take ``video`` [B, 3, T, H, W] in [-1, 1] and return float32 [B]; prompts are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.aesthetic import keyframe_indices
from models.rewards.base import register
from models.vae.losses import PerceptualDistance

LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights, RGB in [0, 1]


def luma(video: torch.Tensor) -> torch.Tensor:
    """video [B, 3, T, H, W] in [-1, 1] -> luma [B, T, H, W] in [0, 1]."""
    w = video.new_tensor(LUMA).view(1, 3, 1, 1, 1)
    return ((video + 1) / 2 * w).sum(1)


def _smooth_abs(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """|x| with a finite, nonzero-where-it-matters gradient at 0 (sqrt(x^2 + eps^2) - eps)."""
    return (x.square() + eps**2).sqrt() - eps


def _check(video: torch.Tensor) -> None:
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"video must be [B, 3, T, H, W], got {tuple(video.shape)}")


def keyframes(video: torch.Tensor, max_frames: int) -> torch.Tensor:
    """[B, 3, T, H, W] -> [B, 3, K, H, W]: up to ``max_frames`` evenly spread frames, first and last kept."""
    T = video.shape[2]
    if T <= max_frames:
        return video
    idx = torch.linspace(0, T - 1, max_frames).round().long().unique()
    return video[:, :, idx.to(video.device)]


@register("motion")
@dataclass
class MotionReward:
    """Motion quality = amplitude x smoothness, in [0, 1] (see the module docstring).

    Attributes:
        amplitude_scale: a0, the mean |frame difference| (luma, [0, 1] units) at which the amplitude
            term is 0.5. 0.02 is a pattern of contrast 0.5 moving ~0.1 of its period per frame.

    A video with T = 1 (an image) has no motion to judge: its reward is 0 for every sample (a constant,
    so it neither rewards nor penalises anything when mixed with T > 1 batches in a composite).
    """

    amplitude_scale: float = 0.02
    name: str = "motion"
    differentiable: bool = True

    def __call__(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        _check(video)
        B, _, T, _, _ = video.shape
        if T < 2:
            return video.new_zeros(B, dtype=torch.float32) + 0.0 * video.sum()  # keep the graph
        y = luma(video.float())
        d1 = y[:, 1:] - y[:, :-1]  # [B, T-1, H, W]
        amp = _smooth_abs(d1).mean(dim=(1, 2, 3))
        amplitude = amp / (amp + self.amplitude_scale)
        if T < 3:  # no second difference: amplitude alone
            return amplitude
        d2 = d1[:, 1:] - d1[:, :-1]  # [B, T-2, H, W]
        ratio = _smooth_abs(d2).mean(dim=(1, 2, 3)) / (2 * amp + 1e-6)
        smoothness = (1 - ratio).clamp(0, 1)
        return amplitude * smoothness


@register("stability")
@dataclass
class StabilityReward:
    """Structural stability: mean cosine similarity of consecutive keyframes' descriptors, mapped to [0, 1].

    A keyframe's descriptor is its fixed random conv features (``PerceptualDistance`` with ``seed``),
    average-pooled to ``grid`` x ``grid`` cells and centred over the cells per channel (so what is
    compared is the spatial layout of structure, not global colour statistics; i.i.d. noise frames
    have near-equal cells and thus near-zero, uncorrelated descriptors). 1 = same structure,
    0.5 = unrelated, 0 = inverted. T = 1 has nothing to compare: 1 for every sample.

    Attributes:
        grid: cells per side; coarser cells tolerate larger motion between keyframes.
        max_keyframes: frames compared (evenly spread, consecutive pairs).
        channels: conv widths of the feature stack (the deepest layer is used).
        seed: seed of the frozen random conv weights.
    """

    grid: int = 4
    max_keyframes: int = 8
    channels: tuple[int, ...] = (16, 32)
    seed: int = 0
    name: str = "stability"
    differentiable: bool = True

    def __post_init__(self) -> None:
        self._features = PerceptualDistance(self.channels, self.seed)

    def descriptors(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] -> centred, unit descriptors [B, K, C * grid^2] of K keyframes."""
        _check(video)
        frames = keyframes(video.float(), self.max_keyframes)
        B, C, K, H, W = frames.shape
        self._features.to(frames.device)
        # "b c k h w -> (b k) c h w"
        feats = self._features.features(frames.transpose(1, 2).reshape(B * K, C, H, W))[-1]
        cells = F.adaptive_avg_pool2d(feats, self.grid).flatten(2)  # [(B K), C', g*g]
        cells = cells - cells.mean(dim=2, keepdim=True)
        return F.normalize(cells.flatten(1), dim=1, eps=1e-6).view(B, K, -1)

    def __call__(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        d = self.descriptors(video)
        if d.shape[1] < 2:
            return torch.ones(d.shape[0], device=d.device) + 0.0 * d.sum()
        cos = (d[:, 1:] * d[:, :-1]).sum(-1)  # [B, K-1]
        return (1 + cos.mean(1)) / 2


def laplacian(y: torch.Tensor) -> torch.Tensor:
    """4-neighbour Laplacian of [N, H, W] images (replicate padding) -> [N, H, W]."""
    k = y.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return F.conv2d(F.pad(y[:, None], (1, 1, 1, 1), mode="replicate"), k)[:, 0]


@register("aesthetic_proxy")
@dataclass
class AestheticProxyReward:
    """Weighted mean of exposure, contrast and sharpness on the first/middle/last frame, in [0, 1].

    On luma y in [0, 1] of each keyframe:

    - exposure = 1 - ((mean y - 0.5) / 0.5)^2: 1 at mid-grey, 0 all black or all white;
    - contrast = tanh(std y / contrast_scale): 0 for a flat frame;
    - sharpness = tanh(RMS(Laplacian y) / sharpness_scale): 0 for a flat frame, low for a blurred one.
      The Laplacian is per pixel, so the same scene scores sharper at a lower resolution; compare
      videos of one resolution.

    Weights (exposure 0.3, contrast 0.3, sharpness 0.4) favour sharpness, the term a generator most
    often loses; they are normalised to sum to 1. The score is the mean over the keyframes.
    """

    exposure_weight: float = 0.3
    contrast_weight: float = 0.3
    sharpness_weight: float = 0.4
    contrast_scale: float = 0.2
    sharpness_scale: float = 0.1
    name: str = "aesthetic_proxy"
    differentiable: bool = True

    def terms(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-term scores, each [B] in [0, 1]: "exposure", "contrast", "sharpness"."""
        _check(video)
        y = luma(video.float()[:, :, keyframe_indices(video.shape[2])])  # [B, K, H, W]
        B, K, H, W = y.shape
        mean = y.mean(dim=(2, 3))
        exposure = 1 - ((mean - 0.5) / 0.5).square()
        contrast = torch.tanh(y.std(dim=(2, 3)) / self.contrast_scale)
        lap_rms = (laplacian(y.reshape(B * K, H, W)).square().mean(dim=(1, 2)) + 1e-12).sqrt()
        sharpness = torch.tanh(lap_rms.view(B, K) / self.sharpness_scale)
        return {"exposure": exposure.mean(1), "contrast": contrast.mean(1), "sharpness": sharpness.mean(1)}

    def __call__(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        t = self.terms(video)
        w = {"exposure": self.exposure_weight, "contrast": self.contrast_weight,
             "sharpness": self.sharpness_weight}
        total = sum(w.values())
        return sum((w[k] / total) * t[k] for k in w)  # type: ignore[return-value]
