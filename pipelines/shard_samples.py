"""What goes into a WebDataset sample: a clip's bucket, its first frame and its captions.

The writer (pipelines/shard_writer.py) groups samples by :func:`bucket_for` and writes what
:func:`sample_for_clip` builds: the clip's mp4, its catalog row with the exportable captions as
json, the dense en/zh captions as text and, for image-to-video, the first frame as a JPEG
(:func:`first_frame_jpeg`, bit-exact so that equal inputs give equal shards).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
from av.video.reformatter import Interpolation
from PIL import Image

from curation.schema import Caption, Clip, ShardSample, clip_row

JPEG_QUALITY = 90

# Resolution classes by the short side, largest first (a clip takes the largest class it reaches).
RESOLUTIONS: tuple[tuple[int, str], ...] = (
    (2160, "4k"),
    (1440, "2k"),
    (1080, "1080p"),
    (720, "720p"),
    (480, "480p"),
    (360, "360p"),
    (240, "240p"),
    (144, "144p"),
)
ASPECTS: tuple[tuple[str, float], ...] = (
    ("21x9", 21 / 9),
    ("16x9", 16 / 9),
    ("4x3", 4 / 3),
    ("1x1", 1.0),
    ("3x4", 3 / 4),
    ("9x16", 9 / 16),
    ("9x21", 9 / 21),
)
DURATIONS: tuple[tuple[float, str], ...] = (
    (2.0, "0-2s"),
    (5.0, "2-5s"),
    (10.0, "5-10s"),
    (20.0, "10-20s"),
    (math.inf, "20s+"),
)


def bucket_for(width: int, height: int, duration_s: float) -> str:
    """The bucket ``<resolution>/<aspect>/<duration>`` of a clip, e.g. ``480p/16x9/2-5s``.

    Args:
        width: frame width in pixels.
        height: frame height in pixels.
        duration_s: clip length in seconds; bins are [lo, hi), 20 s and longer is ``20s+``.

    Returns:
        The resolution class is the largest one the short side reaches (smaller clips count
        as ``144p``); the aspect is the nearest standard ratio in log space.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    short = min(width, height)
    res = next((name for side, name in RESOLUTIONS if short >= side), RESOLUTIONS[-1][1])
    ratio = math.log(width / height)
    aspect = min(ASPECTS, key=lambda a: abs(ratio - math.log(a[1])))[0]
    duration = round(duration_s, 6)  # 50 frames at 25 fps is 2-5s even with float noise
    dur = next(name for hi, name in DURATIONS if duration < hi)
    return f"{res}/{aspect}/{dur}"


def first_frame_jpeg(path: str | Path, quality: int = JPEG_QUALITY) -> bytes:
    """The first decoded frame of ``path`` as a JPEG (bit-exact colour conversion, fixed settings)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0), None)
        if frame is None:
            raise ValueError(f"{path}: no video frame to decode")
        # BITEXACT/ACCURATE_RND: the same RGB on every CPU, not just on this one.
        rgb = frame.reformat(
            format="rgb24",
            interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.BITEXACT,
        ).to_ndarray()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False)
    return buf.getvalue()


def _caption_meta(caption: Caption) -> dict[str, Any]:
    meta = {k: v for k, v in dataclasses.asdict(caption).items() if k != "clip_id"}
    for col in ("checks", "subjects", "actions", "text_overlays", "fields"):  # the JSON columns
        with contextlib.suppress(ValueError, TypeError):  # not JSON (or None): keep it as recorded
            meta[col] = json.loads(meta[col])
    return meta


def sample_for_clip(
    clip: Clip, out_root: Path, captions: Sequence[Caption], first_frame_jpg: bool
) -> ShardSample:
    """The WebDataset sample of one extracted clip.

    Args:
        clip: a clip with ``path`` set (relative to ``out_root``).
        out_root: the curation output root.
        captions: this clip's captions. Only a valid en + zh pair of a kind goes in
            (``captioner.validate.exportable``: a caption that failed a check, or whose other
            half failed, is left out of ``en.txt``, ``zh.txt`` and the json); the dense pair
            becomes ``en.txt`` / ``zh.txt``.
        first_frame_jpg: add the first frame as ``jpg`` (image-to-video conditioning).

    Returns:
        The sample; its ``json`` is the clip's catalog row plus ``captions`` and, when an
        exported dense caption carries a structured description, ``fields`` (that description,
        captioner/caption_schema.py) and ``fields_version``.

    Raises:
        ValueError: if the clip has no file, its path leaves ``out_root``, or a caption
            belongs to another clip.
    """
    if clip.path is None:
        raise ValueError(f"clip {clip.clip_id} has no extracted file")
    root = Path(out_root).resolve()
    path = (root / clip.path).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"clip path {clip.path!r} leaves {root}")
    if any(c.clip_id != clip.clip_id for c in captions):
        raise ValueError(f"captions of another clip passed for {clip.clip_id}")
    from captioner.validate import exportable

    ordered = sorted(exportable(captions), key=lambda c: (c.lang, c.kind, c.model))
    dense = {c.lang: c.text for c in ordered if c.kind == "dense"}
    meta: dict[str, Any] = {**clip_row(clip), "captions": [_caption_meta(c) for c in ordered]}
    described = [c for c in ordered if c.kind == "dense" and c.fields]
    if described:
        meta["fields"] = json.loads(described[0].fields or "")
        meta["fields_version"] = described[0].fields_version
    return ShardSample(
        key=clip.clip_id,
        mp4=path.read_bytes(),
        meta=meta,
        en_txt=dense.get("en"),
        zh_txt=dense.get("zh"),
        jpg=first_frame_jpeg(path) if first_frame_jpg else None,
    )
