"""Flow-matching samplers: integrate the velocity field from noise (t = 1) to data (t = 0).

The convention is the training objective's (``training/loop/flow_matching.py``): ``x_t = (1 - t) x0 +
t noise`` and the model predicts ``v = noise - x0``. These live with the model so that sampling
(``DiT.sample``) needs nothing from training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

ModelFn = Callable[[Tensor, Tensor, Any], Tensor]


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
