"""Decoupled spatial/temporal attention with QK-norm (Seedance 1.0, §2.2).

- ``SpatialAttention``: each frame attends over its own visual tokens joined with the text tokens,
  MMDiT-style: separate QKV and output projections (and QK-norms) per modality, one joint
  attention over [text; frame] per frame. Multi-shot: a frame sees only its own shot's text.
- ``TemporalAttention``: tokens of one spatial window attend to each other across all frames;
  it carries no text.
- Both RMS-normalise q and k per head (QK-norm) and rotate them with MM-RoPE (``rope.py``).

Text stream output of the spatial layer (our choice): a text token is a query in every frame that
sees it; its update is the mean of those per-frame outputs (zero if no frame sees it, e.g. padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.dit.rope import apply_rope, rope_freqs, rope_split


@dataclass
class AttentionConfig:
    """Shared attention hyper-parameters.

    Attributes:
        dim: model width C (visual and text streams share it).
        heads: attention heads; head_dim = dim // heads must be even.
        rope_theta: RoPE base.
        qk_norm_eps: epsilon of the per-head RMSNorm on q and k.
        window: (wh, ww) spatial window of the temporal layer, in patches.
    """

    dim: int = 64
    heads: int = 4
    rope_theta: float = 10000.0
    qk_norm_eps: float = 1e-6
    window: tuple[int, int] = (2, 2)


class QKNorm(nn.RMSNorm):
    """Per-head RMSNorm whose weight follows the input dtype, so bf16 autocast keeps the fused kernel
    (a float32 weight on a bf16 input falls back to the unfused composite). Same state dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) if self.weight is not None else None
        return F.rms_norm(x, self.normalized_shape, w, self.eps)


class _Stream(nn.Module):
    """QKV + QK-norm + output projection of one modality."""

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.heads or (cfg.dim // cfg.heads) % 2:
            raise ValueError(f"dim {cfg.dim} must split into {cfg.heads} heads of even size")
        self.heads = cfg.heads
        head_dim = cfg.dim // cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.q_norm = QKNorm(head_dim, eps=cfg.qk_norm_eps)
        self.k_norm = QKNorm(head_dim, eps=cfg.qk_norm_eps)
        self.out = nn.Linear(cfg.dim, cfg.dim)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, N, C] -> q, k, v each [B, heads, N, head_dim], q and k RMS-normalised per head."""
        B, N, C = x.shape
        # "b n (three h d) -> three b h n d"
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return self.q_norm(q), self.k_norm(k), v


class SpatialAttention(nn.Module):
    """Per-frame joint attention over [text; frame tokens] with per-modality weights."""

    Config = AttentionConfig

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = _Stream(cfg)
        self.text = _Stream(cfg)
        self.freqs = rope_freqs(*rope_split(cfg.dim // cfg.heads), theta=cfg.rope_theta)

    def forward(
        self,
        x: torch.Tensor,
        text: torch.Tensor,
        vis_pos: torch.Tensor,
        txt_pos: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        shot_of_frame: torch.Tensor | None = None,
        text_shot: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend within each frame.

        Args:
            x: [B, T, S, C] visual tokens, S = H*W per frame.
            text: [B, L, C] text tokens.
            vis_pos: [T*S, 3] MM-RoPE positions of the visual tokens (``visual_positions``).
            txt_pos: [L, 3] MM-RoPE positions of the text tokens (``text_positions``).
            text_mask: [B, L] bool, True for real (non-padding) text tokens.
            shot_of_frame: [B, T] long shot id of every frame; with ``text_shot``, a frame
                sees only the text tokens of its own shot.
            text_shot: [B, L] long shot id of every text token.

        Returns:
            (visual update [B, T, S, C], text update [B, L, C]).
        """
        B, T, S, C = x.shape
        L = text.shape[1]
        h, d = self.cfg.heads, C // self.cfg.heads
        qv, kv, vv = self.visual.qkv_heads(x.reshape(B, T * S, C))
        qv, kv = apply_rope(qv, vis_pos, self.freqs), apply_rope(kv, vis_pos, self.freqs)
        qt, kt, vt = self.text.qkv_heads(text)
        qt, kt = apply_rope(qt, txt_pos, self.freqs), apply_rope(kt, txt_pos, self.freqs)

        def per_frame(vis: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
            # vis "b h (t s) d -> (b t) h s d"; txt "b h l d -> (b t) h l d"; then concat [text; frame]
            vis = vis.view(B, h, T, S, d).transpose(1, 2).reshape(B * T, h, S, d)
            txt = txt.unsqueeze(1).expand(B, T, h, L, d).reshape(B * T, h, L, d)
            return torch.cat([txt, vis], dim=2)

        key_mask = None  # every frame sees every text token: no mask, so SDPA may use flash attention
        if text_mask is not None or shot_of_frame is not None or text_shot is not None:
            visible = self._text_visibility(B, T, L, x.device, text_mask, shot_of_frame, text_shot)  # [B,T,L]
            key_mask = torch.cat([visible, visible.new_ones(B, T, S)], dim=-1).view(B * T, 1, 1, L + S)
        o = F.scaled_dot_product_attention(per_frame(qv, qt), per_frame(kv, kt), per_frame(vv, vt), key_mask)
        # "(b t) h n d -> b t n (h d)"
        o = o.view(B, T, h, L + S, d).permute(0, 1, 3, 2, 4).reshape(B, T, L + S, C)
        o_txt, o_vis = o[:, :, :L], o[:, :, L:]
        if key_mask is None:
            o_txt = o_txt.mean(1)
        else:
            w = visible.to(o.dtype).unsqueeze(-1)  # [B, T, L, 1]
            o_txt = (o_txt * w).sum(1) / w.sum(1).clamp(min=1.0)
        return self.visual.out(o_vis), self.text.out(o_txt)

    @staticmethod
    def _text_visibility(
        B: int,
        T: int,
        L: int,
        device: torch.device,
        text_mask: torch.Tensor | None,
        shot_of_frame: torch.Tensor | None,
        text_shot: torch.Tensor | None,
    ) -> torch.Tensor:
        """[B, T, L] bool: may frame t attend to text token l."""
        visible = torch.ones(B, T, L, dtype=torch.bool, device=device)
        if text_mask is not None:
            visible = visible & text_mask[:, None, :].bool()
        if (shot_of_frame is None) != (text_shot is None):
            raise ValueError("shot_of_frame and text_shot must be given together")
        if shot_of_frame is not None and text_shot is not None:
            visible = visible & (shot_of_frame[:, :, None] == text_shot[:, None, :])
        return visible


class TemporalAttention(nn.Module):
    """Attention across all frames inside (wh, ww) spatial windows; no text."""

    Config = AttentionConfig

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = _Stream(cfg)
        self.freqs = rope_freqs(*rope_split(cfg.dim // cfg.heads), theta=cfg.rope_theta)

    def forward(self, x: torch.Tensor, vis_pos: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Attend across frames within each spatial window.

        Args:
            x: [B, T, H*W, C] visual tokens.
            vis_pos: [T*H*W, 3] MM-RoPE positions (``visual_positions``).
            hw: (H, W) latent grid; must be divisible by the window (wh, ww).

        Returns:
            [B, T, H*W, C] visual update.
        """
        B, T, S, C = x.shape
        H, W = hw
        wh, ww = self.cfg.window
        if H * W != S or H % wh or W % ww:
            raise ValueError(f"grid {hw} must hold {S} tokens and be divisible by window {(wh, ww)}")
        nh, nw, h, d = H // wh, W // ww, self.cfg.heads, C // self.cfg.heads
        # Projections are token-wise, so RoPE is applied in raster order before windowing.
        q, k, v = self.visual.qkv_heads(x.reshape(B, T * S, C))
        q, k = apply_rope(q, vis_pos, self.freqs), apply_rope(k, vis_pos, self.freqs)

        def to_windows(z: torch.Tensor) -> torch.Tensor:
            # "b h (t nh wh nw ww) d -> (b nh nw) h (t wh ww) d"
            z = z.view(B, h, T, nh, wh, nw, ww, d).permute(0, 3, 5, 1, 2, 4, 6, 7)
            return z.reshape(B * nh * nw, h, T * wh * ww, d)

        o = F.scaled_dot_product_attention(to_windows(q), to_windows(k), to_windows(v))
        # "(b nh nw) h (t wh ww) d -> b t (nh wh nw ww) (h d)"
        o = o.view(B, nh, nw, h, T, wh, ww, d).permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(B, T, S, C)
        return self.visual.out(o)
