"""Frames for the captioner, sampled from the extracted clip (docs/architecture.md: "The captioner samples
its frames from the extracted clip"): ``n`` frames spread evenly over the clip, each scaled to at
most ``max_pixels`` (aspect kept, even sides) and JPEG-encoded; or the clip itself as a video."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np


def fit_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest (w, h) with even sides, the same aspect, and w * h <= max_pixels (never upscaled)."""
    scale = min(1.0, math.sqrt(max_pixels / max(1, width * height)))
    w, h = (max(2, int(side * scale) // 2 * 2) for side in (width, height))
    return w, h


def even_indices(n_frames: int, k: int) -> list[int]:
    """``k`` frame indices spread evenly over ``n_frames`` (all of them when fewer)."""
    if n_frames <= k:
        return list(range(n_frames))
    return sorted({int(round(x)) for x in np.linspace(0, n_frames - 1, k)})


def sample_jpegs(path: str | Path, n: int = 16, max_pixels: int = 460_800, quality: int = 90) -> list[bytes]:
    """JPEG bytes of ``n`` evenly spread frames of the clip at ``path`` (display orientation)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = stream.frames or 0
        if total <= 0:  # no count in the header: one pass to count
            total = sum(1 for _ in container.decode(stream))
            container.seek(0)
        want = set(even_indices(total, n))
        out: list[bytes] = []
        for i, frame in enumerate(container.decode(stream)):
            if i in want:
                w, h = fit_pixels(frame.width, frame.height, max_pixels)
                image = frame.to_image(width=w, height=h)
                buf = io.BytesIO()
                image.save(buf, format="JPEG", quality=quality)
                out.append(buf.getvalue())
            if len(out) == len(want):
                break
    if not out:
        raise ValueError(f"no frames decoded from {path}")
    return out


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_parts(jpegs: list[bytes]) -> list[dict[str, object]]:
    """OpenAI chat content parts: one ``image_url`` per frame."""
    return [{"type": "image_url", "image_url": {"url": data_uri(j, "image/jpeg")}} for j in jpegs]


def video_part(path: str | Path) -> dict[str, object]:
    """An OpenAI-style ``video_url`` part holding the whole clip (vLLM's video input)."""
    return {"type": "video_url", "video_url": {"url": data_uri(Path(path).read_bytes(), "video/mp4")}}
