"""Seedance-style video DiT (Seedance 1.0, §2.2; docs/architecture.md "DiT").

Architecture choices:

- Latents [B, C, T, H, W] are cut into (pt, ph, pw) patches, (1, 2, 2) by default, and embedded
  by one linear layer (equal to a strided Conv3d).
- ``depth`` pairs of decoupled layers: a ``SpatialBlock`` (per-frame joint [text; frame]
  attention, MMDiT-style per-modality weights) then a ``TemporalBlock`` (windowed attention across
  frames, no text). ``Config.temporal=False`` drops the temporal blocks (ablations, tests).
- adaLN-zero timestep conditioning in every block and in the final layer; the final projection is
  zero-initialised, so the model predicts v = 0 at init and every block is the identity.
- MM-RoPE positions (``rope.py``): 3D on visual tokens, 1D on text placed beyond the visual extent.
- Unified T2V / I2V / T2I (docs/architecture.md): the input is ``concat([x_t, cond * mask, mask], channel)``
  where ``mask`` is 1 on conditioning latent frames. T2V: no conditioning frames (mask 0).
  I2V: the first latent frame. T2I: T = 1 and no conditioning.
- Multi-shot: ``shot_of_frame`` [B, T] and ``text_shot`` [B, L] restrict each frame to its own
  shot's caption inside the spatial layers; only temporal layers mix shots.

Conditioning frames during sampling (``sample``): the state's conditioning frames are set to the
clean condition latent and their velocity to 0, so every Euler/Heun step leaves them unchanged and
the sample's conditioning frames equal the condition exactly. Train to match with
``velocity_fn`` (it applies the same replacement to x_t) and ``flow_matching_loss(mask=1 - mask)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.dit.attention import AttentionConfig
from models.dit.blocks import (
    Modulation,
    SpatialBlock,
    TemporalBlock,
    TimestepEmbedding,
    modulate,
    timestep_features,
)
from models.dit.rope import text_positions, text_start, visual_positions
from models.dit.sampling import ModelFn, euler_sample, heun_sample


@dataclass
class DiTConfig:
    """DiT hyper-parameters.

    Attributes:
        in_channels: VAE latent channels C (also the output channels).
        patch: (pt, ph, pw) patch size in latent frames/pixels.
        dim: model width.
        depth: number of (spatial, temporal) block pairs.
        heads: attention heads; dim // heads must be even.
        mlp_ratio: MLP hidden width / dim.
        text_dim: width of the text encoder's token embeddings.
        window: (wh, ww) temporal-attention window in patches.
        rope_theta: RoPE base.
        cond: channel-concat ``cond * mask`` and ``mask`` (C + 1 extra input channels) for I2V.
        temporal: include the temporal blocks.
        guidance_embed: add a guidance-scale embedding to the timestep embedding (CFG distillation,
            ``training/post/distill.py``): one pass with ``guidance=w`` stands in for the two passes of
            classifier-free guidance. Off by default, so older checkpoints load unchanged.
    """

    in_channels: int = 4
    patch: tuple[int, int, int] = (1, 2, 2)
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 32
    window: tuple[int, int] = (2, 2)
    rope_theta: float = 10000.0
    cond: bool = True
    temporal: bool = True
    guidance_embed: bool = False

    @staticmethod
    def tiny() -> DiTConfig:
        """CPU tests and demo (~0.5 M params)."""
        return DiTConfig(in_channels=4, dim=64, depth=2, heads=4, text_dim=32, window=(2, 2))

    @staticmethod
    def small() -> DiTConfig:
        """One-GPU experiments (~33 M params)."""
        return DiTConfig(in_channels=16, dim=384, depth=4, heads=6, text_dim=1024, window=(4, 4))

    @staticmethod
    def b1() -> DiTConfig:
        """~1 B params: 48-ch latents (docs/architecture.md VAE), head_dim 128."""
        return DiTConfig(in_channels=48, dim=1536, depth=8, heads=12, text_dim=4096, window=(4, 4))

    @property
    def input_channels(self) -> int:
        """Channels after the conditioning concat: x_t (+ cond + mask)."""
        return 2 * self.in_channels + 1 if self.cond else self.in_channels

    @property
    def patch_volume(self) -> int:
        return self.patch[0] * self.patch[1] * self.patch[2]

    def attention(self) -> AttentionConfig:
        return AttentionConfig(dim=self.dim, heads=self.heads, rope_theta=self.rope_theta, window=self.window)


class DiT(nn.Module):
    """v = DiT(x_t, t, text, ...): velocity of the rectified flow (``training/loop/flow_matching.py``)."""

    Config = DiTConfig

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.patch_embed = nn.Linear(cfg.input_channels * cfg.patch_volume, d)
        self.text_proj = nn.Linear(cfg.text_dim, d)
        self.t_embed = TimestepEmbedding(d)
        if cfg.guidance_embed:
            self.g_embed = GuidanceEmbedding(d)
        attn = cfg.attention()
        self.spatial = nn.ModuleList(SpatialBlock(attn, cfg.mlp_ratio) for _ in range(cfg.depth))
        n_temporal = cfg.depth if cfg.temporal else 0
        self.temporal = nn.ModuleList(TemporalBlock(attn, cfg.mlp_ratio) for _ in range(n_temporal))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_mod = Modulation(d, 2)
        self.final_proj = nn.Linear(d, cfg.in_channels * cfg.patch_volume)
        nn.init.zeros_(self.final_proj.weight)
        nn.init.zeros_(self.final_proj.bias)

    def compile_blocks(self, **kwargs: Any) -> None:
        """Regional ``torch.compile``: each spatial and temporal block is compiled in place (state dict
        keys unchanged). Blocks of one kind share code, so compile time stays that of a block or two."""
        for block in [*self.spatial, *self.temporal]:
            block.compile(**kwargs)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, T/pt, (H/ph)*(W/pw), C*pt*ph*pw] tokens in raster order."""
        B, C, T, H, W = x.shape
        pt, ph, pw = self.cfg.patch
        if T % pt or H % ph or W % pw:
            raise ValueError(f"latent {(T, H, W)} is not divisible by patch {self.cfg.patch}")
        # "b c (t pt) (h ph) (w pw) -> b t (h w) (c pt ph pw)"
        x = x.view(B, C, T // pt, pt, H // ph, ph, W // pw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(B, T // pt, (H // ph) * (W // pw), C * pt * ph * pw)

    def unpatchify(self, tokens: torch.Tensor, thw: tuple[int, int, int]) -> torch.Tensor:
        """[B, T/pt, (H/ph)*(W/pw), C*pt*ph*pw] -> [B, C, T, H, W] (inverse of ``patchify``)."""
        B = tokens.shape[0]
        T, H, W = thw
        pt, ph, pw = self.cfg.patch
        C = self.cfg.in_channels
        # "b t (h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)"
        x = tokens.view(B, T // pt, H // ph, W // pw, C, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(B, C, T, H, W)

    def _with_condition(
        self, x_t: torch.Tensor, cond: torch.Tensor | None, cond_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, input_channels, T, H, W]: concat([x_t, cond * mask, mask])."""
        if not self.cfg.cond:
            if cond is not None:
                raise ValueError("this DiT was built with cond=False")
            return x_t
        B, _, T, H, W = x_t.shape
        if cond is None:
            return torch.cat([x_t, torch.zeros_like(x_t), x_t.new_zeros(B, 1, T, H, W)], dim=1)
        if cond_mask is None:
            raise ValueError("cond needs cond_mask [B, T] (True on conditioning latent frames)")
        m = frame_mask(cond_mask, x_t)
        return torch.cat([x_t, cond * m, m.expand(B, 1, T, H, W)], dim=1)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        cond_mask: torch.Tensor | None = None,
        shot_of_frame: torch.Tensor | None = None,
        text_shot: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity.

        Args:
            x_t: [B, C, T, H, W] noisy latents; T, H, W divisible by ``patch`` and the patch grid
                by ``window``.
            t: [B] timesteps in [0, 1] (1 = noise).
            text: [B, L, text_dim] text-encoder embeddings.
            text_mask: [B, L] bool, True on real tokens.
            cond: [B, C, T, H, W] condition latents (only frames with ``cond_mask`` are read).
            cond_mask: [B, T] bool, True on conditioning latent frames (I2V: frame 0).
            shot_of_frame: [B, T] long shot id of every latent frame (multi-shot).
            text_shot: [B, L] long shot id of every text token.
            guidance: [B] CFG scale (``guidance_embed`` models only); None = the plain conditional
                prediction (at init the guidance embedding is 0 for every scale).

        Returns:
            [B, C, T, H, W] velocity ``noise - x0``.
        """
        B, _, T, H, W = x_t.shape
        pt, ph, pw = self.cfg.patch
        gt, gh, gw = T // pt, H // ph, W // pw
        x = self.patch_embed(self.patchify(self._with_condition(x_t, cond, cond_mask)))  # [B, gt, S, dim]
        txt = self.text_proj(text)  # [B, L, dim]
        temb = self.t_embed(t)  # [B, dim]
        if guidance is not None:
            if not self.cfg.guidance_embed:
                raise ValueError("guidance needs a DiT built with guidance_embed=True")
            temb = temb + self.g_embed(guidance.to(temb.device))
        vis_pos = visual_positions(gt, gh, gw).to(x.device)
        txt_pos = text_positions(text.shape[1], text_start(gt, gh, gw)).to(x.device)
        if shot_of_frame is not None:
            shot_of_frame = shot_of_frame[:, ::pt]  # one shot id per patched frame
        for i, spatial in enumerate(self.spatial):
            x, txt = spatial(x, txt, temb, vis_pos, txt_pos, text_mask, shot_of_frame, text_shot)
            if self.cfg.temporal:
                x = self.temporal[i](x, temb, vis_pos, (gh, gw))
        shift, scale = self.final_mod(temb)
        out = self.final_proj(modulate(self.final_norm(x), shift, scale))
        return self.unpatchify(out, (T, H, W))


class GuidanceEmbedding(nn.Module):
    """[B] guidance scales -> [B, dim] added to the timestep embedding (Flux-dev style).

    Sinusoidal features of ``w / 10`` (``timestep_features`` scales by 1000, so scales up to ~10 span
    the same phase range as timesteps) then a two-layer MLP whose last layer is zero-initialised: a
    fresh embedding adds 0, so the model equals its conditional prediction for every scale.
    """

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        feats = timestep_features(w.float() / 10.0, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(feats)


def frame_mask(cond_mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B, T] bool frame mask -> [B, 1, T, 1, 1] in ``like``'s dtype, to broadcast over [B, C, T, H, W]."""
    B, T = cond_mask.shape
    return cond_mask.to(device=like.device, dtype=like.dtype).view(B, 1, T, 1, 1)


def condition_frames(
    x: torch.Tensor, cond: torch.Tensor | None, cond_mask: torch.Tensor | None
) -> torch.Tensor:
    """Replace the conditioning frames of x [B, C, T, H, W] by the clean condition (no-op without cond)."""
    if cond is None or cond_mask is None:
        return x
    m = frame_mask(cond_mask, x)
    return x * (1 - m) + cond * m


def velocity_fn(model: DiT) -> ModelFn:
    """``model_fn(x_t, t, kwargs) -> v`` for ``training/loop/flow_matching.py``; ``kwargs`` are DiT.forward's.

    The conditioning frames of x_t are set to the clean condition and their velocity to 0, so
    samplers keep them fixed; use the same function for training (with the loss masked off those
    frames) so the model sees at train time what it sees at sampling time.
    """

    def fn(x_t: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        cond, cond_mask = kwargs.get("cond"), kwargs.get("cond_mask")
        v = model(condition_frames(x_t, cond, cond_mask), t, **kwargs)
        if cond is None or cond_mask is None:
            return v
        return v * (1 - frame_mask(cond_mask, v))

    return fn


@torch.no_grad()
def sample(
    model: DiT,
    noise: torch.Tensor,
    kwargs: dict[str, Any],
    steps: int,
    shift: float = 1.0,
    cfg_scale: float = 1.0,
    uncond_kwargs: dict[str, Any] | None = None,
    heun: bool = False,
) -> torch.Tensor:
    """Generate latents with T2V / I2V / T2I conditioning.

    Args:
        model: the DiT.
        noise: [B, C, T, H, W] start state at t = 1.
        kwargs: DiT.forward keyword arguments (``text`` required; ``cond``/``cond_mask`` for I2V).
        steps, shift, cfg_scale: see ``euler_sample``.
        uncond_kwargs: the CFG negative (e.g. empty text); it is given the same ``cond``/``cond_mask``
            as ``kwargs`` (CFG drops the text, not the image), which also keeps the guided
            velocity of the conditioning frames at 0.
        heun: second-order sampler.

    Returns:
        [B, C, T, H, W] latents; the conditioning frames equal ``cond`` exactly.
    """
    x = condition_frames(noise, kwargs.get("cond"), kwargs.get("cond_mask"))
    if uncond_kwargs is not None and "cond" in kwargs:
        uncond_kwargs = {**uncond_kwargs, "cond": kwargs["cond"], "cond_mask": kwargs.get("cond_mask")}
    sampler = heun_sample if heun else euler_sample
    return sampler(velocity_fn(model), x, steps, shift, cfg_scale, kwargs, uncond_kwargs)


def token_linear_params(cfg: DiTConfig) -> tuple[int, int]:
    """Weights applied once per token, (per visual token, per text token); biases and adaLN excluded.

    Every visual token passes the patch embedding, each block's visual QKV/out/MLP and the final
    projection; every text token the text projection and each spatial block's text QKV/out/MLP.
    """
    d, h = cfg.dim, int(cfg.dim * cfg.mlp_ratio)
    block = 4 * d * d + 2 * d * h  # QKV + out + MLP
    n_temporal = cfg.depth if cfg.temporal else 0
    visual = cfg.input_channels * cfg.patch_volume * d + (cfg.depth + n_temporal) * block
    visual += d * cfg.in_channels * cfg.patch_volume
    text = cfg.text_dim * d + cfg.depth * block
    return visual, text


def flops_per_step(cfg: DiTConfig, T: int, H: int, W: int, L: int) -> float:
    """Training FLOPs (forward + backward) of one sample, ``6 * params * tokens`` plus attention.

    Args:
        cfg: model config.
        T, H, W: latent grid (before patchify).
        L: text tokens.

    Returns:
        FLOPs: ``6 * (P_vis * N + P_txt * L) + 3 * attn_fwd`` with N = patched visual tokens and
        ``attn_fwd`` = 4 * dim * (per layer: spatial ``T' * (L + S)^2``, temporal ``N * T' * wh * ww``)
        (QK^T and AV, 2 FLOPs per multiply-add). Backward counted as twice the forward.
    """
    pt, ph, pw = cfg.patch
    gt, S = T // pt, (H // ph) * (W // pw)
    N = gt * S
    p_vis, p_txt = token_linear_params(cfg)
    wh, ww = cfg.window
    spatial = 4 * cfg.dim * gt * (L + S) ** 2
    temporal = 4 * cfg.dim * N * gt * wh * ww if cfg.temporal else 0
    attn_fwd = cfg.depth * (spatial + temporal)
    return float(6 * (p_vis * N + p_txt * L) + 3 * attn_fwd)
