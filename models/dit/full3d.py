"""Full 3D attention, the baseline the decoupled spatial/temporal layers are measured against.

Seedance 1.0 (§2.2) replaces full 3D attention (every visual token of a clip attends to every
other, plus the text) by decoupled layers: per-frame spatial attention with the text and windowed
temporal attention across frames. This module builds the full-3D counterpart with *the same
weights*, so that the two differ only in who attends to whom:

- ``Full3DBlock`` (a ``SpatialBlock``): one joint attention over [text; all T*S visual tokens] of
  a sample. It reuses ``SpatialBlock``/``SpatialAttention`` unchanged by viewing [B, T, S, C] as a
  single "frame" [B, 1, T*S, C]. RoPE stays exact: ``vis_pos`` [T*S, 3] already lists the
  (t, h, w) of every token in the same raster order as that flattening, and ``SpatialAttention``
  rotates the flattened [B, T*S, C] tokens with it. With one frame, the text update is that frame's
  output (the per-frame mean of ``SpatialAttention`` over a single frame).
- ``Full3DVisualBlock`` (a ``TemporalBlock``): the same adaLN-zero + MLP, attention over all T*S
  visual tokens without text (``Full3DVisualAttention``: ``TemporalAttention`` with a single window
  covering the whole grid).
- ``Full3DStack`` = ``depth`` x (``Full3DBlock``, ``Full3DVisualBlock``), the counterpart of
  ``DecoupledStack`` = ``depth`` x (``SpatialBlock``, ``TemporalBlock``), the DiT's layer stack.
  Both hold ``spatial``/``temporal`` module lists with identical parameter names and shapes: equal
  parameter counts, and a state dict of one loads into the other.
- ``full3d_dit(cfg)``: a ``DiT`` whose blocks are the full-3D ones (same parameters as ``DiT(cfg)``).

Multi-shot (``shot_of_frame``/``text_shot``) restricts each *frame* to its own caption, which one
joint attention over all frames cannot express with a key mask; the full-3D blocks reject it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.dit.attention import AttentionConfig, TemporalAttention
from models.dit.blocks import SpatialBlock, TemporalBlock
from models.dit.model import DiT, DiTConfig
from models.dit.rope import apply_rope


class Full3DBlock(SpatialBlock):
    """``SpatialBlock`` over all T*S visual tokens of a sample and its text in one joint attention."""

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
        """x [B, T, S, C], text [B, L, C], temb [B, C] -> (x, text); arguments as ``SpatialBlock``."""
        if shot_of_frame is not None or text_shot is not None:
            raise NotImplementedError("full 3D attention has no per-frame text visibility (multi-shot)")
        B, T, S, C = x.shape
        if vis_pos.shape[0] != T * S:
            raise ValueError(f"vis_pos must hold the {T * S} = T*S visual positions, got {vis_pos.shape[0]}")
        # [B, T, S, C] -> one frame of T*S tokens; vis_pos is in the same (t, h, w) raster order.
        x, text = super().forward(x.reshape(B, 1, T * S, C), text, temb, vis_pos, txt_pos, text_mask)
        return x.view(B, T, S, C), text


class Full3DVisualAttention(TemporalAttention):
    """Attention over all T*H*W visual tokens of a sample (no text); ``TemporalAttention``'s weights."""

    def forward(self, x: torch.Tensor, vis_pos: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x [B, T, S, C], vis_pos [T*S, 3] -> [B, T, S, C]; ``hw`` is accepted for the same call."""
        B, T, S, C = x.shape
        q, k, v = self.visual.qkv_heads(x.reshape(B, T * S, C))
        q, k = apply_rope(q, vis_pos, self.freqs), apply_rope(k, vis_pos, self.freqs)
        o = F.scaled_dot_product_attention(q, k, v)  # [B, heads, T*S, head_dim]
        # "b h n d -> b n (h d)"
        return self.visual.out(o.transpose(1, 2).reshape(B, T, S, C))


class Full3DVisualBlock(TemporalBlock):
    """``TemporalBlock`` (adaLN-zero + MLP) whose attention spans every visual token of the sample."""

    def __init__(self, attn: AttentionConfig, mlp_ratio: float) -> None:
        super().__init__(attn, mlp_ratio)
        self.attn = Full3DVisualAttention(attn)


class DecoupledStack(nn.Module):
    """The DiT's layers alone: ``depth`` x (``SpatialBlock``, ``TemporalBlock``)."""

    spatial_cls: type[SpatialBlock] = SpatialBlock
    temporal_cls: type[TemporalBlock] = TemporalBlock

    def __init__(self, attn: AttentionConfig, depth: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.spatial = nn.ModuleList(self.spatial_cls(attn, mlp_ratio) for _ in range(depth))
        self.temporal = nn.ModuleList(self.temporal_cls(attn, mlp_ratio) for _ in range(depth))

    def forward(
        self,
        x: torch.Tensor,
        text: torch.Tensor,
        temb: torch.Tensor,
        vis_pos: torch.Tensor,
        txt_pos: torch.Tensor,
        hw: tuple[int, int],
        text_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, H*W, C], text [B, L, C], temb [B, C] -> (x, text); as ``DiT.forward``'s loop."""
        for spatial, temporal in zip(self.spatial, self.temporal, strict=True):
            x, text = spatial(x, text, temb, vis_pos, txt_pos, text_mask)
            x = temporal(x, temb, vis_pos, hw)
        return x, text


class Full3DStack(DecoupledStack):
    """``depth`` x (``Full3DBlock``, ``Full3DVisualBlock``): ``DecoupledStack``'s parameters, full 3D."""

    spatial_cls = Full3DBlock
    temporal_cls = Full3DVisualBlock


def full3d_dit(cfg: DiTConfig) -> DiT:
    """A ``DiT`` with full-3D blocks in place of the decoupled ones (same parameter names and count)."""
    if not cfg.temporal:
        raise ValueError("full3d_dit pairs each spatial block with a visual block; needs cfg.temporal")
    model = DiT(cfg)
    attn = cfg.attention()
    model.spatial = nn.ModuleList(Full3DBlock(attn, cfg.mlp_ratio) for _ in range(cfg.depth))
    model.temporal = nn.ModuleList(Full3DVisualBlock(attn, cfg.mlp_ratio) for _ in range(cfg.depth))
    return model


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
