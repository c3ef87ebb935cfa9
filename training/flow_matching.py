"""Rectified-flow objective and samplers (DESIGN.md "Objective").

Paper claim implemented: Seedance trains with flow matching (velocity prediction), logit-normal
timesteps and a resolution/length-aware timestep shift, following SD3 (Esser et al. 2024,
"Scaling Rectified Flow Transformers") and Flux.

Convention (used everywhere in vidloom):

* ``x_t = (1 - t) * x0 + t * noise`` with ``t`` in [0, 1]; ``t = 0`` is data, ``t = 1`` pure noise.
* The model predicts the velocity ``v = dx_t/dt = noise - x0``.
* Sampling integrates ``dx/dt = v`` from ``t = 1`` down to ``t = 0``.

A ``model_fn`` is any callable ``model_fn(x_t, t, cond) -> v`` with ``x_t: [B, ...]``,
``t: [B]`` (float, in [0, 1]) and ``v`` shaped like ``x_t``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

ModelFn = Callable[[Tensor, Tensor, Any], Tensor]


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


def shift_t(t: Tensor, shift: float) -> Tensor:
    """SD3 timestep shift ``t' = shift * t / (1 + (shift - 1) * t)``.

    Monotone map of [0, 1] onto itself fixing 0 and 1; ``shift > 1`` moves every interior ``t``
    toward 1 (more noise), which larger images / longer videos need because their many
    correlated tokens keep more signal at a given noise level.

    Args:
        t: timesteps, any shape, in [0, 1].
        shift: shift factor > 0; 1 is the identity.

    Returns:
        Shifted timesteps, same shape as ``t``.
    """
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * t / (1.0 + (shift - 1.0) * t)


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


def sampling_schedule(steps: int, shift: float = 1.0) -> Tensor:
    """Timesteps ``[steps + 1]`` from 1 down to 0: uniform grid then :func:`shift_t`."""
    return shift_t(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


def cfg_velocity(model_fn: ModelFn, x: Tensor, t: Tensor, cond: Any, uncond: Any, cfg_scale: float) -> Tensor:
    """Classifier-free guided velocity ``v_u + s * (v_c - v_u)``.

    Uses two ``model_fn`` calls (no batching, so ``cond``/``uncond`` may be any structure); the
    unconditional call is skipped when ``cfg_scale == 1`` or ``uncond`` is None.

    Args:
        x: ``[B, ...]`` current state; t: ``[B]``.

    Returns:
        ``[B, ...]`` guided velocity.
    """
    v_c = model_fn(x, t, cond)
    if cfg_scale == 1.0 or uncond is None:
        return v_c
    v_u = model_fn(x, t, uncond)
    return v_u + cfg_scale * (v_c - v_u)


def _sample(
    model_fn: ModelFn,
    noise: Tensor,
    steps: int,
    shift: float,
    cfg_scale: float,
    cond: Any,
    uncond: Any,
    heun: bool,
) -> Tensor:
    ts = sampling_schedule(steps, shift).tolist()
    x = noise
    b = noise.shape[0]

    def vel(x_: Tensor, t_: float) -> Tensor:
        tt = torch.full((b,), t_, dtype=noise.dtype, device=noise.device)
        return cfg_velocity(model_fn, x_, tt, cond, uncond, cfg_scale)

    for t_cur, t_next in zip(ts[:-1], ts[1:], strict=True):
        dt = t_next - t_cur  # negative: integrating from noise toward data
        v = vel(x, t_cur)
        x_euler = x + dt * v
        if heun:
            # Trapezoidal corrector; evaluated at t_next = 0 too, so the field must be finite there.
            x = x + dt * 0.5 * (v + vel(x_euler, t_next))
        else:
            x = x_euler
    return x


def euler_sample(
    model_fn: ModelFn,
    noise: Tensor,
    steps: int,
    shift: float = 1.0,
    cfg_scale: float = 1.0,
    cond: Any = None,
    uncond: Any = None,
) -> Tensor:
    """Integrate ``dx/dt = v`` from ``t = 1`` to 0 with Euler on :func:`sampling_schedule`.

    Args:
        model_fn: ``(x [B, ...], t [B], cond) -> v [B, ...]``.
        noise: ``[B, ...]`` starting state at ``t = 1``.
        steps: number of steps; NFE = ``steps`` (times 2 with CFG).
        shift: schedule shift (> 1 spends more steps at high noise).
        cfg_scale, cond, uncond: see :func:`cfg_velocity`.

    Returns:
        ``[B, ...]`` samples at ``t = 0``.
    """
    return _sample(model_fn, noise, steps, shift, cfg_scale, cond, uncond, heun=False)


def heun_sample(
    model_fn: ModelFn,
    noise: Tensor,
    steps: int,
    shift: float = 1.0,
    cfg_scale: float = 1.0,
    cond: Any = None,
    uncond: Any = None,
) -> Tensor:
    """Second-order Heun (explicit trapezoid) version of :func:`euler_sample`.

    NFE = ``2 * steps`` (times 2 with CFG); the global error is O(1/steps^2) vs Euler's O(1/steps).
    """
    return _sample(model_fn, noise, steps, shift, cfg_scale, cond, uncond, heun=True)
