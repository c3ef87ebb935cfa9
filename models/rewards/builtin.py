"""The built-in rewards, registered when this module is imported, and ``build_reward`` (by name).

Registered names (Seedance 1.0, §4.1: RLHF with several reward models, one per quality dimension):

    name              module     differentiable  needs
    motion            proxies    yes             nothing
    stability         proxies    yes             nothing
    aesthetic_proxy   proxies    yes             nothing
    text_alignment    learned    yes             a trained head by path (None: untrained head)
    motion_learned    learned    yes             a trained head by path
    aesthetic_clip    here       yes             CLIP ViT-L/14 + LAION MLP weights by path
    vlm_foundational  captioner  no              an OpenAI-compatible VLM endpoint (import
                                                 captioner.vlm_reward to register it)
    composite         here       if all terms    the weights of the rewards it sums

Rewards loaded from files raise ``FileNotFoundError`` naming the missing file; nothing is downloaded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.aesthetic import CLIP_MEAN, CLIP_MODEL, CLIP_STD, WEIGHTS_HELP, keyframe_indices
from models.rewards import learned as learned
from models.rewards import proxies as proxies
from models.rewards.base import REGISTRY, Reward, register


def build_reward(name: str, **kwargs: Any) -> Reward:
    """Build a registered reward: the built-in ones (this module) and any registered elsewhere
    (``captioner.vlm_reward`` registers ``vlm_foundational`` when imported)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown reward {name!r}; registered: {sorted(REGISTRY)}")
    return REGISTRY[name](**kwargs)

def keyframe_images(video: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] in [-1, 1] -> first/middle/last frames [B, K, 3, H, W] in [0, 1]."""
    frames = video[:, :, keyframe_indices(video.shape[2])].transpose(1, 2)
    return ((frames.float() + 1) / 2).clamp(0, 1)


def clip_preprocess(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Differentiable CLIP preprocessing (as ``models.aesthetic.preprocess``, on tensors).

    images [N, 3, H, W] in [0, 1] -> [N, 3, size, size]: shorter side to ``size`` (bicubic,
    antialiased), centre crop, normalised with the CLIP mean and std.
    """
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x.clamp(0, 1)[:, :, top : top + size, left : left + size]
    mean, std = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1), x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@register("aesthetic_clip")
@dataclass
class AestheticClipReward:
    """LAION aesthetic predictor (``models/aesthetic.py``) on the keyframes: mean 1-10 rating [B].

    Differentiable: preprocessing is done on tensors and nothing runs under no_grad, so gradients
    reach the video through the (frozen) CLIP tower and head.

    Attributes:
        clip_weights: open_clip ViT-L/14 checkpoint (see ``models.aesthetic.WEIGHTS_HELP``).
        mlp_weights: the LAION head ``sac+logos+ava1-l14-linearMSE.pth``.
        encoder, head: already-built modules (image [N, 3, s, s] -> [N, d]; unit [N, d] -> [N, 1]) used
            instead of the paths, e.g. another image model.
        size: preprocessing resolution s.
    """

    clip_weights: str = ""
    mlp_weights: str = ""
    model_name: str = CLIP_MODEL
    encoder: nn.Module | None = None
    head: nn.Module | None = None
    size: int = 224
    name: str = "aesthetic_clip"
    differentiable: bool = True

    def __post_init__(self) -> None:
        if self.encoder is None or self.head is None:
            for key, path in (("clip_weights", self.clip_weights), ("mlp_weights", self.mlp_weights)):
                if not path or not os.path.isfile(path):
                    raise FileNotFoundError(f"aesthetic_clip: {key} = {path!r} is not a file: {WEIGHTS_HELP}")
            from models.aesthetic import load_aesthetic_head, load_clip_image_encoder

            self.encoder = load_clip_image_encoder(self.clip_weights, self.model_name)
            self.head = load_aesthetic_head(self.mlp_weights)
        self.encoder = self.encoder.eval().requires_grad_(False)
        self.head = self.head.eval().requires_grad_(False)

    def __call__(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        assert self.encoder is not None and self.head is not None
        frames = keyframe_images(video)  # [B, K, 3, H, W]
        B, K = frames.shape[:2]
        p = next(self.encoder.parameters())
        x = clip_preprocess(frames.flatten(0, 1), self.size).to(p.device, p.dtype)
        emb = F.normalize(self.encoder(x).float(), dim=-1)
        return self.head(emb).view(B, K).mean(1).float()


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_rating(text: str | None, low: float = 1.0, high: float = 10.0) -> float | None:
    """The first number in ``text`` if it lies in [low, high], else None."""
    match = _NUMBER.search(text or "")
    if match is None:
        return None
    value = float(match.group())
    return value if low <= value <= high else None


@register("composite")
class CompositeReward:
    """A weighted sum of rewards, with each term available for logging.

    Args:
        weights: reward name -> weight; each name is built with ``build_reward`` unless given in
            ``rewards``.
        rewards: already-built rewards by name (e.g. a trained head shared with the trainer).
        options: reward name -> keyword arguments for ``build_reward``.

    ``differentiable`` is True only when every term with a nonzero weight is.
    """

    name = "composite"

    def __init__(self, weights: dict[str, float], rewards: dict[str, Reward] | None = None,
                 options: dict[str, dict[str, Any]] | None = None) -> None:
        if not weights:
            raise ValueError("CompositeReward needs at least one weighted reward")
        given, options = rewards or {}, options or {}
        self.weights = dict(weights)
        self.rewards = {n: given[n] if n in given else build_reward(n, **options.get(n, {})) for n in weights}
        self.differentiable = all(r.differentiable for n, r in self.rewards.items() if self.weights[n] != 0)

    def terms(self, video: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Each reward's scores: name -> float32 [B]."""
        return {n: r(video, prompts).float() for n, r in self.rewards.items()}

    def combine(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum [B] of terms already computed by ``terms``."""
        zero = torch.zeros_like(next(iter(terms.values())))
        return sum((self.weights[n] * terms[n] for n in self.weights), zero)

    def __call__(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.combine(self.terms(video, prompts))


def term_stats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """``{"<name>/mean", "<name>/var"}`` over the batch of each term (population variance), for logging."""
    out = {}
    for n, t in terms.items():
        t = t.detach().float()
        out[f"{n}/mean"], out[f"{n}/var"] = float(t.mean()), float(t.var(correction=0))
    return out
