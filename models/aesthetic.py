"""Aesthetic score: the LAION "improved aesthetic predictor" on CLIP ViT-L/14 image embeddings.

Claim implemented (christophschuhmann/improved-aesthetic-predictor): an MLP on the
L2-normalised OpenAI CLIP ViT-L/14 image embedding (768-d), trained on SAC + LAION-Logos + AVA
ratings (``sac+logos+ava1-l14-linearMSE.pth``), predicts a 1-10 aesthetic rating. The MLP has
no activations: Linear(768, 1024) - Dropout(0.2) - Linear(1024, 128) - Dropout(0.2) -
Linear(128, 64) - Dropout(0.1) - Linear(64, 16) - Linear(16, 1).

A clip's score is the mean over its keyframes (first, middle, last sparse frame); its embedding
(the mean of the keyframes' unit embeddings, renormalised) is a by-product for semantic dedup.

The model is pluggable: :func:`score_frames` takes any image encoder and head modules. Weights
are never downloaded; they are given by path, and loading fails fast without them. torch and
open_clip are imported inside the functions (this module is imported by the score step to
decide whether the scorer can run at all).
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP preprocessing, RGB in [0, 1]
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MODEL = "ViT-L-14-quickgelu"  # OpenAI's ViT-L/14 was trained with QuickGELU
HEAD_WIDTHS = (1024, 128, 64, 16)
WEIGHTS_HELP = (
    "set scores.aesthetic.clip_weights to an open_clip 'ViT-L-14' checkpoint with the 'openai' weights "
    "(open_clip_pytorch_model.bin from the Hugging Face repo timm/vit_large_patch14_clip_224.openai, "
    "or OpenAI's ViT-L-14.pt) and scores.aesthetic.mlp_weights to the LAION improved-aesthetic-predictor "
    "head sac+logos+ava1-l14-linearMSE.pth (github.com/christophschuhmann/improved-aesthetic-predictor)"
)


class AestheticWeightsMissing(RuntimeError):
    """The aesthetic scorer's weights are not configured or not on disk."""


def missing_weights_reason(clip_weights: str | None, mlp_weights: str | None) -> str | None:
    """What is wrong with the configured weight paths (unset, or not a file), or None."""
    paths = {"aesthetic.clip_weights": clip_weights, "aesthetic.mlp_weights": mlp_weights}
    unset = [f"scores.{k}" for k, v in paths.items() if not v]
    if unset:
        return f"no aesthetic weights configured ({', '.join(unset)} unset): {WEIGHTS_HELP}"
    for key, path in paths.items():
        if not os.path.isfile(str(path)):
            return f"scores.{key} = {path!r} is not a file: {WEIGHTS_HELP}"
    return None


def aesthetic_unavailable_reason(clip_weights: str | None, mlp_weights: str | None) -> str | None:
    """Why the aesthetic scorer cannot run with these settings, or None when it can.

    Checks only what is cheap (paths, whether open_clip is installed); nothing is loaded.
    """
    if reason := missing_weights_reason(clip_weights, mlp_weights):
        return reason
    if importlib.util.find_spec("open_clip") is None:
        return "open_clip is not installed: pip install open_clip_torch"
    return None


def aesthetic_head(in_dim: int = 768, widths: Sequence[int] = HEAD_WIDTHS) -> torch.nn.Module:
    """The LAION MLP (see the module docstring), in eval mode; ``widths`` are its 4 hidden sizes.

    Its parameter names match the published state dict (``layers.0.weight`` ... ``layers.7.bias``).
    Input float [n, in_dim] unit embeddings; output float [n, 1] scores.
    """
    from torch import nn

    w0, w1, w2, w3 = widths
    layers = nn.Sequential(
        nn.Linear(in_dim, w0), nn.Dropout(0.2),
        nn.Linear(w0, w1), nn.Dropout(0.2),
        nn.Linear(w1, w2), nn.Dropout(0.1),
        nn.Linear(w2, w3),
        nn.Linear(w3, 1),
    )  # fmt: skip
    return nn.Sequential(OrderedDict(layers=layers)).eval()


def load_aesthetic_head(path: str, in_dim: int = 768, widths: Sequence[int] = HEAD_WIDTHS) -> torch.nn.Module:
    """The MLP with the state dict saved at ``path`` (plain or under a ``state_dict`` key)."""
    import torch

    if not os.path.isfile(path):
        raise AestheticWeightsMissing(f"aesthetic MLP weights {path!r} not found: {WEIGHTS_HELP}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    head = aesthetic_head(in_dim, widths)
    head.load_state_dict(state)
    return head


def _is_torchscript(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (OpenAI's CLIP release) rather than a state dict."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("/constants.pkl") for name in z.namelist())


def load_clip_image_encoder(path: str, model_name: str = CLIP_MODEL) -> torch.nn.Module:
    """The image tower of an open_clip model with the checkpoint at ``path``, in eval mode.

    Input float [n, 3, 224, 224] normalised images; output float [n, 768] projected embeddings
    (not normalised). The text tower is dropped.
    """
    if not os.path.isfile(path):
        raise AestheticWeightsMissing(f"CLIP weights {path!r} not found: {WEIGHTS_HELP}")
    try:
        import open_clip
    except ImportError as e:
        raise ImportError("the aesthetic scorer needs open_clip: pip install open_clip_torch") from e
    # A TorchScript archive cannot be read with weights_only=True; a state dict can and should.
    safe = not _is_torchscript(path)
    model = open_clip.create_model(model_name, pretrained=path, device="cpu", weights_only=safe)
    return model.visual.eval()


def keyframe_indices(n: int) -> list[int]:
    """Indices of the first, middle and last of ``n`` frames (distinct, in order)."""
    return sorted({0, n // 2, n - 1}) if n > 0 else []


def preprocess(
    frames_rgb: np.ndarray,
    size: int = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """CLIP preprocessing: shorter side to ``size`` (bicubic, antialiased), centre crop, normalise.

    Args:
        frames_rgb: [n, h, w, 3] RGB, uint8 in 0-255 or float in 0-1.

    Returns:
        float32 [n, 3, size, size].
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames_rgb)).permute(0, 3, 1, 2)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def score_frames(
    frames_rgb: np.ndarray,
    encoder: torch.nn.Module,
    head: torch.nn.Module,
    preprocess_size: int = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> tuple[float, np.ndarray]:
    """Aesthetic score of a clip from its keyframes, and its unit embedding.

    Args:
        frames_rgb: [n, h, w, 3] RGB keyframes (uint8 0-255 or float 0-1), n >= 1.
        encoder: image encoder, float [n, 3, s, s] -> [n, d].
        head: float [n, d] unit embeddings -> [n, 1] scores.

    Returns:
        (mean of the per-frame scores, float32 [d] unit-norm mean of the unit embeddings).
    """
    import torch
    import torch.nn.functional as F

    if len(frames_rgb) == 0:
        raise ValueError("score_frames needs at least one frame")
    p = next(encoder.parameters())
    with torch.inference_mode():
        x = preprocess(frames_rgb, preprocess_size, mean, std).to(p.device, p.dtype)
        emb = F.normalize(encoder(x).float(), dim=-1)
        scores = head(emb.to(next(head.parameters()).device)).reshape(-1)
        mean_emb = F.normalize(emb.mean(dim=0), dim=0)
    return float(scores.mean()), mean_emb.cpu().numpy().astype(np.float32)
