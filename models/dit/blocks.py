"""DiT building blocks (Seedance 1.0, §2.2): adaLN-zero spatial and temporal blocks, timestep embedding.

- ``TimestepEmbedding``: sinusoidal features of ``1000 * t`` followed by a two-layer MLP (DiT, Peebles & Xie).
- ``SpatialBlock``: MMDiT-style block; the visual and text streams each get their own adaLN
  (shift/scale/gate from the timestep embedding), their own MLP, and share one ``SpatialAttention``
  (which already holds per-modality QKV/output weights).
- ``TemporalBlock``: adaLN + ``TemporalAttention`` (windowed, across frames, no text) + MLP.

adaLN-zero: every modulation projection is zero-initialised, so all gates are 0 and every block is
the identity at init; the first update the optimiser makes is what turns a block on.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.dit.attention import AttentionConfig, SpatialAttention, TemporalAttention


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of ``1000 * t``.

    Args:
        t: [B] float timesteps in [0, 1].
        dim: even feature size.
        max_period: longest wavelength, in units of ``1000 * t``.

    Returns:
        [B, dim] float32, ``[cos(1000 t f_i), sin(1000 t f_i)]`` with ``f_i = max_period^(-i / (dim/2))``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None, :]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class TimestepEmbedding(nn.Module):
    """[B] timesteps -> [B, dim] embedding (sinusoid + MLP)."""

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        feats = timestep_features(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(feats)


def mlp(dim: int, ratio: float) -> nn.Sequential:
    """Token-wise GELU MLP dim -> ratio*dim -> dim."""
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class Modulation(nn.Module):
    """adaLN-zero: timestep embedding -> ``n`` chunks of [B, dim] (shifts, scales, gates), zero at init."""

    def __init__(self, dim: int, n: int) -> None:
        super().__init__()
        self.n = n
        self.proj = nn.Linear(dim, n * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, temb: torch.Tensor) -> list[torch.Tensor]:
        """[B, dim] -> n tensors [B, dim]."""
        return list(self.proj(nn.functional.silu(temb)).chunk(self.n, dim=-1))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` with [B, C] shift/scale broadcast over the token axes of x [B, ..., C]."""
    view = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return x * (1 + scale.view(view)) + shift.view(view)


def gated(gate: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """[B, C] gate times update [B, ..., C]."""
    return gate.view((gate.shape[0],) + (1,) * (update.dim() - 2) + (gate.shape[-1],)) * update


class SpatialBlock(nn.Module):
    """Per-frame joint attention of [text; frame] with per-modality adaLN-zero and MLPs."""

    def __init__(self, attn: AttentionConfig, mlp_ratio: float) -> None:
        super().__init__()
        dim = attn.dim
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SpatialAttention(attn)
        self.vis_mod, self.txt_mod = Modulation(dim, 6), Modulation(dim, 6)
        self.vis_mlp, self.txt_mlp = mlp(dim, mlp_ratio), mlp(dim, mlp_ratio)

    def forward(
        self,
        x: torch.Tensor,
        text: torch.Tensor,
        temb: torch.Tensor,
        vis_pos: torch.Tensor,
        txt_pos: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        shot_of_frame: torch.Tensor | None = None,
        text_shot: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, S, C], text [B, L, C], temb [B, C] -> (x, text) with the same shapes."""
        v_sh1, v_sc1, v_g1, v_sh2, v_sc2, v_g2 = self.vis_mod(temb)
        t_sh1, t_sc1, t_g1, t_sh2, t_sc2, t_g2 = self.txt_mod(temb)
        dv, dt = self.attn(
            modulate(self.norm(x), v_sh1, v_sc1),
            modulate(self.norm(text), t_sh1, t_sc1),
            vis_pos,
            txt_pos,
            text_mask,
            shot_of_frame,
            text_shot,
        )
        x = x + gated(v_g1, dv)
        text = text + gated(t_g1, dt)
        x = x + gated(v_g2, self.vis_mlp(modulate(self.norm(x), v_sh2, v_sc2)))
        text = text + gated(t_g2, self.txt_mlp(modulate(self.norm(text), t_sh2, t_sc2)))
        return x, text


class TemporalBlock(nn.Module):
    """Windowed attention across frames (no text) with adaLN-zero and an MLP."""

    def __init__(self, attn: AttentionConfig, mlp_ratio: float) -> None:
        super().__init__()
        dim = attn.dim
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = TemporalAttention(attn)
        self.mod = Modulation(dim, 6)
        self.mlp = mlp(dim, mlp_ratio)

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, vis_pos: torch.Tensor, hw: tuple[int, int]
    ) -> torch.Tensor:
        """x [B, T, S, C], temb [B, C] -> x [B, T, S, C]."""
        sh1, sc1, g1, sh2, sc2, g2 = self.mod(temb)
        x = x + gated(g1, self.attn(modulate(self.norm(x), sh1, sc1), vis_pos, hw))
        return x + gated(g2, self.mlp(modulate(self.norm(x), sh2, sc2)))
