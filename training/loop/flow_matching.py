"""Rectified-flow training objective: timestep sampling, the resolution shift and the loss.

Paper claim implemented: Seedance trains with flow matching (velocity prediction), logit-normal
timesteps and a resolution/length-aware timestep shift, following SD3 (Esser et al. 2024,
"Scaling Rectified Flow Transformers") and Flux.

Convention (used everywhere in vidloom):

* ``x_t = (1 - t) * x0 + t * noise`` with ``t`` in [0, 1]; ``t = 0`` is data, ``t = 1`` pure noise.
* The model predicts the velocity ``v = dx_t/dt = noise - x0``.
* Sampling integrates ``dx/dt = v`` from ``t = 1`` down to ``t = 0``.

The samplers (``euler_sample``, ``heun_sample``, ``cfg_velocity``, ``sampling_schedule``) and
``shift_t`` live with the model, in ``models/dit/sampling.py`` (the model never imports training);
they are re-exported here for the training code.

A ``model_fn`` is any callable ``model_fn(x_t, t, cond) -> v`` with ``x_t: [B, ...]``,
``t: [B]`` (float, in [0, 1]) and ``v`` shaped like ``x_t``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from models.dit.sampling import (  # noqa: F401  (re-exported for training code)
    ModelFn,
    cfg_velocity,
    euler_sample,
    heun_sample,
    sampling_schedule,
    shift_t,
)


def logit_normal_t(
    n: int, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Sample training timesteps from a logit-normal distribution (SD3 section 3.1).

    ``t = sigmoid(u)`` with ``u ~ N(mean, std^2)``; concentrates samples at mid-noise levels.

    Args:
        n: number of timesteps.
        mean: location of ``u``; 0 gives median ``t = 0.5``.
        std: scale of ``u``.
        generator: optional RNG for reproducibility.

    Returns:
        Tensor ``[n]`` of float32 timesteps strictly inside (0, 1).
    """
    u = torch.randn(n, generator=generator) * std + mean
    # Clamp keeps t away from exactly 0/1 (sigmoid saturates in float32 for |u| > ~17).
    return torch.sigmoid(u).clamp(1e-6, 1.0 - 1e-6)


def resolution_shift(
    n_tokens: int,
    base_tokens: int = 256,
    max_tokens: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """Resolution/length-aware shift, as in Flux: ``mu`` linear in token count, ``shift = exp(mu)``.

    ``mu`` is ``base_shift`` at ``base_tokens`` and ``max_shift`` at ``max_tokens``, linearly
    extrapolated outside that range; more tokens (higher resolution, more frames) give a larger shift.

    Args:
        n_tokens: latent tokens per sample (``frames * height * width`` after patchify).
        base_tokens, max_tokens: token counts anchoring the line.
        base_shift, max_shift: ``mu = log(shift)`` at the two anchors.

    Returns:
        The shift factor to pass to :func:`shift_t` (``> 0``).
    """
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    mu = base_shift + slope * (n_tokens - base_tokens)
    return math.exp(mu)


def flow_matching_loss(
    model_fn: ModelFn,
    x0: Tensor,
    cond: Any,
    t: Tensor | None = None,
    generator: torch.Generator | None = None,
    shift: float = 1.0,
    mask: Tensor | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Velocity-matching MSE ``|| model_fn(x_t, t, cond) - (noise - x0) ||^2``.

    Args:
        model_fn: ``(x_t [B, ...], t [B], cond) -> v [B, ...]``.
        x0: clean latents ``[B, ...]``.
        cond: passed through to ``model_fn`` unchanged.
        t: timesteps ``[B]``; if None, drawn from :func:`logit_normal_t` and then shifted by
            ``shift`` (an explicit ``t`` is used as given).
        generator: RNG for ``t`` and ``noise``.
        shift: timestep shift applied to sampled ``t`` (see :func:`resolution_shift`).
        mask: optional weights broadcastable to ``x0`` (1 = counts, 0 = excluded, e.g. the
            clean conditioning frames of image-to-video). Each sample's loss is the masked mean
            over its elements.
        noise: optional ``[B, ...]`` noise; drawn from N(0, 1) if None.

    Returns:
        ``(loss, aux)``: scalar loss (mean over samples of per-sample mean) and a dict with
        ``per_sample [B]``, ``t [B]``, ``x_t``, ``noise``, ``target`` and ``pred`` (``[B, ...]``).
    """
    b = x0.shape[0]
    if t is None:
        t = shift_t(logit_normal_t(b, generator=generator), shift)
    t = t.to(device=x0.device, dtype=x0.dtype)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    t_b = t.view(b, *([1] * (x0.dim() - 1)))
    x_t = (1.0 - t_b) * x0 + t_b * noise
    target = noise - x0
    pred = model_fn(x_t, t, cond)
    err = (pred.float() - target.float()) ** 2
    if mask is None:
        per_sample = err.reshape(b, -1).mean(dim=1)
    else:
        w = mask.to(err).expand_as(err).reshape(b, -1)
        per_sample = (err.reshape(b, -1) * w).sum(1) / w.sum(1).clamp_min(1e-8)
    aux = {"per_sample": per_sample, "t": t, "x_t": x_t, "noise": noise, "target": target, "pred": pred}
    return per_sample.mean(), aux
