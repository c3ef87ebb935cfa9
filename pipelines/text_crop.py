"""Crop rather than drop: the largest crop of a frame that leaves out its overlay text.

Seedance 1.0 crops titles, subtitles and logos away when they sit near the frame's edges and
drops a clip only when its text cannot be cut off. Here the text boxes of a clip are the union
over its sampled OCR frames (text shown in only some frames counts), stored by the overlay-text
scorer as fractions of the frame (``ClipScores.text_boxes``). The filter step searches, from
those stored boxes alone (``--rescore`` needs no OCR), the largest axis-aligned crop that

- overlaps no text box, each padded by ``margin`` (a fraction of the frame height, on every
  side: detector boxes are measured on ~256x144 frames, a few source pixels off, and glyph
  borders, shadows and fades reach past them);
- lies inside the picture box (the letterbox/pillarbox bars' inside, ``crop_x/y/w/h``): the
  text crop is intersected with it, so one box says what extraction keeps, and bars are not
  counted as picture that the crop loses;
- keeps at least ``min_area`` of the picture box's area, with an aspect ratio within
  ``max_aspect_change`` of the picture box's and at most ``max_aspect`` (the ``bad_aspect`` rule);
- has edges on multiples of ``align`` source pixels (2: 4:2:0 chroma needs even offsets and
  sides), rounded inwards so no padded text pixel is kept.

A centred title or text scattered over the frame leaves no such crop: that clip is rejected
with ``text``. The search is exact over the candidate edges (every optimal empty rectangle has
each edge on the frame's or a box's edge): O(n^2) row ranges times an O(n log n) sweep of the
free column gaps, for n boxes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.overlay_text import TextBox

# (x0, y0, x1, y1), fractions of the frame (0-1), [x0, x1) x [y0, y1)
FracBox = tuple[float, float, float, float]
_PX = tuple[int, int, int, int]  # (x0, y0, x1, y1) in source pixels

CORNER = 1 / 3  # text within this fraction of a side's length from one end sits in a corner


@dataclass(frozen=True, slots=True)
class Crop:
    """A crop in source pixels (``x``, ``y``: top-left corner) and why it was chosen."""

    x: int
    y: int
    w: int
    h: int
    reason: str  # '+'-joined parts: 'text_bottom_band', 'text_corner_top_right', 'letterbox', ...


def union_boxes(frames: Sequence[Sequence[TextBox]], width: int, height: int) -> list[FracBox]:
    """Every frame's boxes as fractions of its ``width`` x ``height`` (clipped to the frame),
    pooled over the frames: boxes that lie inside another box are dropped (a subtitle read in
    every frame leaves its largest reading)."""
    pooled = {
        (
            min(max(b.x0 / width, 0.0), 1.0),
            min(max(b.y0 / height, 0.0), 1.0),
            min(max(b.x1 / width, 0.0), 1.0),
            min(max(b.y1 / height, 0.0), 1.0),
        )
        for f in frames
        for b in f
    }
    inside = lambda a, b: a != b and b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]
    return sorted(a for a in pooled if not any(inside(a, b) for b in pooled))


def encode_boxes(boxes: Sequence[FracBox], digits: int = 4) -> str:
    """The boxes as a compact JSON list of [x0, y0, x1, y1], rounded outwards to ``digits``
    decimals (a stored box never shrinks), duplicates dropped, sorted."""
    q = 10**digits
    rounded = sorted(
        {(math.floor(x0 * q) / q, math.floor(y0 * q) / q, math.ceil(x1 * q) / q, math.ceil(y1 * q) / q)
         for x0, y0, x1, y1 in boxes}
    )  # fmt: skip
    return json.dumps([list(b) for b in rounded], separators=(",", ":"))


def decode_boxes(text: str | None) -> list[FracBox]:
    """The boxes of ``encode_boxes``; None or '' gives []."""
    if not text:
        return []
    return [(float(a), float(b), float(c), float(d)) for a, b, c, d in json.loads(text)]


def union_area(boxes: Sequence[FracBox]) -> float:
    """Fraction of the frame covered by the union of ``boxes`` (exact, overlaps count once).

    Over a clip's pooled boxes this is at least its ``text_area`` (the per-frame mean): a title
    shown in one of four sampled frames counts in full here.
    """
    xs = sorted({v for b in boxes for v in (b[0], b[2])})
    total = 0.0
    for xa, xb in pairwise(xs):  # vertical strips between box edges: add up covered y spans
        covered, top, bottom = 0.0, -1.0, -1.0
        for y0, y1 in sorted((b[1], b[3]) for b in boxes if b[0] <= xa and b[2] >= xb):
            if y0 > bottom:
                covered, top, bottom = covered + bottom - top, y0, y1
            else:
                bottom = max(bottom, y1)
        total += (xb - xa) * (covered + bottom - top)
    return total


def _padded_px(boxes: Sequence[FracBox], width: int, height: int, margin: float) -> list[_PX]:
    """Boxes in source pixels, padded by ``margin * height`` and rounded outwards."""
    pad = margin * height
    out = []
    for x0, y0, x1, y1 in boxes:
        px = (
            max(0, math.floor(x0 * width - pad)),
            max(0, math.floor(y0 * height - pad)),
            min(width, math.ceil(x1 * width + pad)),
            min(height, math.ceil(y1 * height + pad)),
        )
        if px[2] > px[0] and px[3] > px[1]:
            out.append(px)
    return out


def _gaps(spans: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The free intervals of [lo, hi) outside the union of ``spans``."""
    gaps, at = [], lo
    for a, b in sorted(spans):
        if a > at:
            gaps.append((at, min(a, hi)))
        at = max(at, b)
        if at >= hi:
            break
    if at < hi:
        gaps.append((at, hi))
    return [(a, b) for a, b in gaps if b > a]


def _aligned(x0: int, y0: int, x1: int, y1: int, align: int) -> _PX:
    """Edges moved inwards onto multiples of ``align``."""
    up = lambda v: -(-v // align) * align
    return up(x0), up(y0), x1 // align * align, y1 // align * align


def _fit_aspect(r: _PX, lo: float, hi: float, align: int) -> _PX:
    """``r`` shrunk about its centre until w/h is within [lo, hi] (edges stay aligned)."""
    x0, y0, x1, y1 = r
    w, h = x1 - x0, y1 - y0
    if w > hi * h:
        nw = int(hi * h) // align * align
        nx = x0 + (w - nw) // 2 // align * align
        return nx, y0, nx + nw, y1
    if w < lo * h:
        nh = int(w / lo) // align * align
        ny = y0 + (h - nh) // 2 // align * align
        return x0, ny, x1, ny + nh
    return r


def _side_reason(side: str, boxes: list[_PX], width: int, height: int) -> str:
    """'text_<side>_band', or 'text_corner_<v>_<h>' when the boxes cut off by ``side`` all sit
    within ``CORNER`` of one end of it."""
    if side in ("top", "bottom"):
        if max(b[2] for b in boxes) <= CORNER * width:
            return f"text_corner_{side}_left"
        if min(b[0] for b in boxes) >= (1 - CORNER) * width:
            return f"text_corner_{side}_right"
    else:
        if max(b[3] for b in boxes) <= CORNER * height:
            return f"text_corner_top_{side}"
        if min(b[1] for b in boxes) >= (1 - CORNER) * height:
            return f"text_corner_bottom_{side}"
    return f"text_{side}_band"


def _reason(crop: _PX, boxes: list[_PX], picture: _PX, width: int, height: int) -> str:
    x0, y0, x1, y1 = crop
    cut = {  # side -> the boxes that side leaves out (a corner box may count for two sides)
        "top": [b for b in boxes if b[3] <= y0],
        "bottom": [b for b in boxes if b[1] >= y1],
        "left": [b for b in boxes if b[2] <= x0],
        "right": [b for b in boxes if b[0] >= x1],
    }
    # A box left out by two sides is named by the side that cuts fewer pixel lines.
    depth = {"top": y0, "bottom": height - y1, "left": x0, "right": width - x1}
    owner: dict[_PX, str] = {}
    for side in sorted(cut, key=lambda s: (depth[s], s)):
        for b in cut[side]:
            owner.setdefault(b, side)
    parts = []
    for side in ("top", "bottom", "left", "right"):
        mine = [b for b, s in owner.items() if s == side]
        if mine:
            parts.append(_side_reason(side, mine, width, height))
    if picture != (0, 0, width, height):
        parts.append("letterbox")
    return "+".join(dict.fromkeys(parts))


def text_crop(
    boxes: Sequence[FracBox],
    width: int,
    height: int,
    picture: tuple[int, int, int, int] | None = None,
    *,
    margin: float = 0.02,
    min_area: float = 0.8,
    max_aspect_change: float = 1.25,
    max_aspect: float = 4.0,
    min_size: tuple[int, int] = (1, 1),
    align: int = 2,
) -> Crop | None:
    """The largest crop that leaves out every (padded) text box, or None when none qualifies.

    Args:
        boxes: text boxes as fractions of the frame, the union over the sampled frames.
        width, height: the source's displayed size in pixels.
        picture: (x, y, w, h) the picture inside letterbox bars, source pixels; None = the frame.
        margin: padding around each box, fraction of ``height`` (see the module docstring).
        min_area: the crop keeps at least this fraction of the picture box's area.
        max_aspect_change: the crop's w/h stays within this factor of the picture box's.
        max_aspect: long side / short side at most this.
        min_size: (min width, min height) of the crop in pixels.
        align: crop edges on multiples of this many pixels (even for 4:2:0).

    Returns:
        The crop; ties (equal area) go to the one whose centre is nearest the frame's centre.
    """
    px, py, pw, ph = picture or (0, 0, width, height)
    if min(width, height, pw, ph) <= 0:
        return None
    pic: _PX = (px, py, px + pw, py + ph)
    padded = [
        b for b in _padded_px(boxes, width, height, margin)
        if b[2] > pic[0] and b[0] < pic[2] and b[3] > pic[1] and b[1] < pic[3]
    ]  # fmt: skip
    need = min_area * pw * ph
    src = pw / ph
    lo = max(src / max_aspect_change, 1 / max_aspect)
    hi = min(src * max_aspect_change, max_aspect)
    tops = sorted({pic[1], *(b[3] for b in padded if b[3] < pic[3])})
    bottoms = sorted({pic[3], *(b[1] for b in padded if b[1] > pic[1])})
    best: tuple[float, float, _PX] | None = None
    for y0 in tops:
        for y1 in bottoms:
            if (y1 - y0) * (pic[2] - pic[0]) < need:
                continue
            rows = [(b[0], b[2]) for b in padded if b[3] > y0 and b[1] < y1]
            for x0, x1 in _gaps(rows, pic[0], pic[2]):
                if (x1 - x0) * (y1 - y0) < need:
                    continue
                r = _fit_aspect(_aligned(x0, y0, x1, y1, align), lo, hi, align)
                w, h = r[2] - r[0], r[3] - r[1]
                if w * h < need or w < min_size[0] or h < min_size[1] or not lo <= w / h <= hi:
                    continue
                off = abs(r[0] + r[2] - width) + abs(r[1] + r[3] - height)
                key = (float(w * h), -float(off), r)
                if best is None or key[:2] > best[:2] or (key[:2] == best[:2] and r < best[2]):
                    best = key
    if best is None:
        return None
    r = best[2]
    return Crop(r[0], r[1], r[2] - r[0], r[3] - r[1], _reason(r, padded, pic, width, height))
