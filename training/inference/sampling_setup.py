"""What every sampling path shares: the settings a checkpoint implies (``resolve_settings``), the
conditioning image, a per-part ``Timer``, autocast, and ``prepare`` (noise, text and image
conditioning, CFG scale and the timestep shift of one prompt).

``training/inference/generate.py`` samples with them; the refiner cascade, the thin decoder's evaluation and
the adaptive step picker use them too, without importing generation itself.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import TrainConfig
from training.loop.checkpoint import Pipeline
from training.loop.flow_matching import resolution_shift

ImageInput = str | os.PathLike[str] | Any  # a path, or a PIL image


def resolve_settings(cfg: TrainConfig, n_frames: int | None = None, size: tuple[int, int] | None = None,
                     fps: float | None = None) -> tuple[int, tuple[int, int], float]:
    """(n_frames, (H, W), fps): defaults from the last stage, validated against the VAE and DiT.

    Raises:
        ValueError: n_frames is not 1 + dt * k, H or W is not a multiple of
            VAE stride * patch * window, the latent frames do not divide by the temporal patch,
            or fps <= 0.
    """
    last = cfg.stages[-1]
    n_frames = int(last.n_frames if n_frames is None else n_frames)
    h, w = (int(v) for v in (last.size if size is None else size))
    fps = float(last.fps if fps is None else fps)
    dt, dh, dw = cfg.vae.downsample
    pt, ph, pw = cfg.dit.patch
    wh, ww = cfg.dit.window
    if n_frames < 1 or (n_frames - 1) % dt:
        raise ValueError(f"n_frames must be 1 + {dt}k (1, {1 + dt}, {1 + 2 * dt}, ...), got {n_frames}")
    if (1 + (n_frames - 1) // dt) % pt:
        raise ValueError(f"n_frames {n_frames} gives {1 + (n_frames - 1) // dt} latent frames, "
                         f"not divisible by the DiT's temporal patch {pt}")
    mh, mw = dh * ph * wh, dw * pw * ww
    if h <= 0 or w <= 0 or h % mh or w % mw:
        raise ValueError(f"size (H, W) = {(h, w)} must be positive multiples of ({mh}, {mw}) "
                         f"(VAE stride {(dh, dw)} x patch {(ph, pw)} x window {(wh, ww)})")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return n_frames, (h, w), fps


def load_image(image: ImageInput, size: tuple[int, int]) -> torch.Tensor:
    """An image (path or PIL image; a video path gives its first frame) -> [3, H, W] in [-1, 1].

    Center-cropped to the aspect of ``size`` = (H, W), then resized (box filter when shrinking).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(image, Image.Image):
        img = image
    else:
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"conditioning image {path} does not exist")
        try:
            with Image.open(path) as f:
                img = ImageOps.exif_transpose(f)
                img.load()
        except UnidentifiedImageError:
            img = _first_video_frame(path)
    img = img.convert("RGB")
    h, w = size
    iw, ih = img.size
    if iw * h > ih * w:  # wider than the target: crop the sides
        cw, ch = max(1, round(ih * w / h)), ih
    else:
        cw, ch = iw, max(1, round(iw * h / w))
    left, top = (iw - cw) // 2, (ih - ch) // 2
    img = img.crop((left, top, left + cw, top + ch))
    shrink = cw >= w and ch >= h
    img = img.resize((w, h), Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return (arr / 127.5 - 1.0).clamp(-1.0, 1.0)


def _first_video_frame(path: Path) -> Any:
    import av

    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return frame.to_image()
    except (av.error.FFmpegError, IndexError) as e:
        raise ValueError(f"{path} is neither an image nor a video: {e}") from e
    raise ValueError(f"{path} has no video frames")


class Timer:
    """Seconds per part of one generation: text encoding, DiT passes (count and total), refiner
    passes, VAE decode. CUDA work is synchronised before each reading."""

    KEYS = ("text_s", "dit_passes", "dit_s", "refiner_passes", "refiner_s", "vae_decode_s")

    def __init__(self, out: dict[str, Any] | None = None) -> None:
        self.out = {} if out is None else out
        for k in self.KEYS:
            self.out.setdefault(k, 0)

    @contextlib.contextmanager
    def section(self, key: str) -> Any:
        sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            sync()
            self.out[key] = round(self.out.get(key, 0.0) + time.perf_counter() - start, 6)

    def counted(self, model: Any, key: str) -> Any:
        """``model`` as a callable that adds one to ``out[key]`` per call (a DiT pass)."""

        def call(*args: Any, **kwargs: Any) -> Any:
            self.out[key] = self.out.get(key, 0) + 1
            return model(*args, **kwargs)

        return call


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def device_of(pipeline: Pipeline) -> torch.device:
    return next(pipeline.dit.parameters()).device


def autocast_for(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for the DiT on CUDA when the run trained in bf16; float32 elsewhere."""
    if device.type == "cuda" and cfg.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def encode_condition(pipeline: Pipeline, image: ImageInput, size: tuple[int, int]) -> torch.Tensor:
    """Normalised latent [1, C, 1, H', W'] of the conditioning image (posterior mean)."""
    device = device_of(pipeline)
    pixels = load_image(image, size)[None, :, None].to(device)  # [1, 3, 1, H, W]
    z = pipeline.vae.encode(pixels).mean.float()
    return pipeline.latent_stats.normalize(z)


@torch.no_grad()
def prepare(pipeline: Pipeline, prompt: str, image: ImageInput | None, n_frames: int, size: tuple[int, int],
            cfg_scale: float, negative_prompt: str, seed: int, timer: Timer | None = None
            ) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any] | None, float, float]:
    """What sampling one prompt starts from: (noise, DiT kwargs, CFG negative kwargs or None, the
    sampler's CFG scale, the timestep shift); settings already validated (``resolve_settings``)."""
    cfg = pipeline.config
    timer = timer or Timer()
    h, w = size
    device = device_of(pipeline)
    lt, lh, lw = cfg.vae.latent_shape(n_frames, h, w)
    shape = (1, cfg.dit.in_channels, lt, lh, lw)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))).to(device)

    def text_kwargs(caption: str) -> dict[str, Any]:
        with timer.section("text_s"):
            emb, mask = pipeline.text_encoder.encode([caption])
            return {"text": emb.float().to(device), "text_mask": mask.to(device)}

    kwargs = text_kwargs(prompt)
    uncond, base_cfg_scale = None, cfg_scale
    if cfg.dit.guidance_embed:  # a CFG-distilled student: one pass per step, the scale is an input
        kwargs["guidance"] = torch.full((1,), float(cfg_scale), device=device)
        base_cfg_scale = 1.0
    elif cfg_scale != 1.0:  # only plain CFG needs the negative caption encoded
        uncond = text_kwargs(negative_prompt)
    if image is not None:
        cond = torch.zeros(shape, device=device)
        cond[:, :, :1] = encode_condition(pipeline, image, (h, w))
        cond_mask = torch.zeros(1, lt, dtype=torch.bool, device=device)
        cond_mask[:, 0] = True
        kwargs.update(cond=cond, cond_mask=cond_mask)
    shift = 1.0
    if cfg.timestep_shift:
        pt, ph, pw = cfg.dit.patch
        shift = resolution_shift((lt // pt) * (lh // ph) * (lw // pw))
    return noise, kwargs, uncond, base_cfg_scale, shift
