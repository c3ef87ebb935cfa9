"""MM-RoPE (Seedance 1.0, §2.2): 3D RoPE on visual tokens plus 1D RoPE on text tokens.

Visual tokens carry positions (t, h, w); the head dimension is split into three bands, one per
axis (as in Qwen2-VL's M-RoPE, a quarter of it for time and the rest shared by height and width).

Text placement (our choice, following Qwen2-VL's M-RoPE): text token i gets the position
(start + i, start + i, start + i) on all three axes. With equal coordinates the 3D rotation is
exactly a 1D RoPE over the text sequence, and with ``start`` beyond the visual extent
(``text_start(T, H, W) = max(T, H, W)``) no text token shares a position with a visual token.

Rotation is applied to interleaved pairs ``(x[..., 2i], x[..., 2i + 1])``; angles are computed in
float32 (float64 for float64 inputs) and the result is cast back to the input dtype.
"""

from __future__ import annotations

import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Default (dim_t, dim_h, dim_w) band split of a head: 1/4 time, 3/8 height, 3/8 width.

    For ``head_dim=128`` this is (32, 48, 48), Qwen2-VL's split. Every band is even.
    """
    if head_dim % 2:
        raise ValueError(f"head_dim must be even, got {head_dim}")
    dim_t = 2 * (head_dim // 8)
    rest = head_dim - dim_t
    dim_h = 2 * (rest // 4)
    return dim_t, dim_h, rest - dim_h


def rope_freqs(
    dim_t: int, dim_h: int, dim_w: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse frequencies for each axis band.

    Args:
        dim_t, dim_h, dim_w: channels of the head given to each axis; each must be even.
        theta: RoPE base.

    Returns:
        (freqs_t [dim_t/2], freqs_h [dim_h/2], freqs_w [dim_w/2]), float64,
        ``freqs_a[i] = theta ** (-2i / dim_a)`` (radians per position step).
    """
    out = []
    for dim in (dim_t, dim_h, dim_w):
        if dim % 2:
            raise ValueError(f"every RoPE band must be even, got {(dim_t, dim_h, dim_w)}")
        out.append(theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    return out[0], out[1], out[2]


def visual_positions(T: int, H: int, W: int, t0: int = 0) -> torch.Tensor:
    """Positions of a latent video in (t, h, w) raster order (time slowest, width fastest).

    Args:
        T, H, W: latent grid size in patches.
        t0: time offset of the first frame (e.g. a later shot of a multi-shot sequence).

    Returns:
        [T*H*W, 3] long tensor of (t, h, w).
    """
    t, h, w = torch.meshgrid(torch.arange(t0, t0 + T), torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack([t, h, w], dim=-1).reshape(T * H * W, 3)


def text_start(T: int, H: int, W: int, t0: int = 0) -> int:
    """First text position: just beyond the visual extent on every axis."""
    return max(t0 + T, H, W)


def text_positions(L: int, start: int) -> torch.Tensor:
    """1D positions of L text tokens embedded in 3D: token i -> (start+i, start+i, start+i).

    Returns:
        [L, 3] long tensor.
    """
    return torch.arange(start, start + L).unsqueeze(-1).expand(L, 3).contiguous()


def apply_rope(
    x: torch.Tensor,
    pos: torch.Tensor,
    freqs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    theta: float = 10000.0,
) -> torch.Tensor:
    """Rotate queries or keys by their 3D positions.

    Args:
        x: [B, heads, N, D] queries or keys.
        pos: [N, 3] (t, h, w) positions (integer or float).
        freqs: per-axis inverse frequencies from ``rope_freqs``; defaults to
            ``rope_freqs(*rope_split(D), theta)``. Band sizes must sum to D.
        theta: RoPE base, used only when ``freqs`` is None.

    Returns:
        [B, heads, N, D], same dtype as x.
    """
    D = x.shape[-1]
    if freqs is None:
        freqs = rope_freqs(*rope_split(D), theta=theta)
    if 2 * sum(f.numel() for f in freqs) != D:
        raise ValueError(f"RoPE bands {[2 * f.numel() for f in freqs]} do not sum to head dim {D}")
    if pos.shape != (x.shape[-2], 3):
        raise ValueError(f"pos must be [N, 3] with N={x.shape[-2]}, got {tuple(pos.shape)}")
    ctype = torch.float64 if x.dtype == torch.float64 else torch.float32
    p = pos.to(device=x.device, dtype=ctype)
    # angles: [N, D/2] = concat over axes a of pos[:, a, None] * freqs_a[None, :]
    angles = torch.cat([p[:, a, None] * f.to(device=x.device, dtype=ctype) for a, f in enumerate(freqs)], -1)
    cos, sin = angles.cos(), angles.sin()
    xf = x.to(ctype)
    # "b h n (d two) -> b h n d two"
    pairs = xf.reshape(*xf.shape[:-1], D // 2, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    # "b h n d two -> b h n (d two)"
    return out.reshape(x.shape).to(x.dtype)
