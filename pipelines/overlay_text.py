"""Burned-in overlay text (captions, subtitles, watermarks, titles): OCR results -> ClipScores fields.

Video-generation training data should not teach the model to paint text it was never asked
for, so each clip gets (curation/schema.py, ``ClipScores``):

- ``text_area``: union area of the text boxes / frame area, averaged over the sampled frames
  (a frame without text counts as 0);
- ``ocr_text``: the recognised lines, deduplicated across frames in order of first appearance,
  joined by ``' | '`` and capped at ``max_chars``;
- ``text_stable``: one box (IoU > ``min_iou``) with similar text recurs in at least
  ``min_fraction`` of the sampled frames: a fixed subtitle, a title card, a corner watermark.

Everything here is pure and works on :class:`TextBox` lists (one list per sampled frame); the
OCR engine itself is run by ``pipelines/stages/text_scorer.py``. Boxes are axis-aligned: overlay
text is horizontal, and the rectangle around a detector's quadrilateral is close enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

import numpy as np

SEPARATOR = " | "


@dataclass(frozen=True, slots=True)
class TextBox:
    """One recognised text line in one frame, in that frame's pixels ([x0, x1) x [y0, y1))."""

    text: str
    score: float
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


@dataclass(frozen=True, slots=True)
class OverlayText:
    """The overlay-text scores of one clip (see the module docstring)."""

    text_area: float
    ocr_text: str
    text_stable: bool | None


def boxes_from_ocr(result: Any, min_confidence: float = 0.0, max_height: float = np.inf) -> list[TextBox]:
    """The text lines of one RapidOCR result (``RapidOCROutput``: ``boxes`` float [n, 4, 2]
    quadrilaterals in input pixels, ``txts``, ``scores``). A result without detections gives [].

    Args:
        min_confidence: drop lines whose recognition score is below this.
        max_height: drop boxes taller than this many pixels. The detector fires on large flat
            shapes (SMPTE bars, a white fractal: one "character" in a box most of the frame
            tall, recognition score 0.7-0.9); no overlay text line is that tall.
    """
    boxes, txts, scores = (getattr(result, k, None) for k in ("boxes", "txts", "scores"))
    if boxes is None or txts is None or scores is None:
        return []
    out = []
    quads = np.asarray(boxes, dtype=np.float64).reshape(-1, 4, 2)
    for quad, text, score in zip(quads, txts, scores, strict=True):
        text = " ".join(str(text).split())
        (x0, y0), (x1, y1) = quad.min(axis=0), quad.max(axis=0)
        if text and float(score) >= min_confidence and y1 - y0 <= max_height:
            out.append(TextBox(text, float(score), float(x0), float(y0), float(x1), float(y1)))
    return out


def covered_fraction(boxes: Sequence[TextBox], width: int, height: int) -> float:
    """Fraction of a ``width`` x ``height`` frame covered by the union of ``boxes`` (overlaps
    count once; parts outside the frame are ignored)."""
    if not boxes:
        return 0.0
    mask = np.zeros((height, width), dtype=bool)
    for b in boxes:
        x0, x1 = (int(np.clip(round(v), 0, width)) for v in (b.x0, b.x1))
        y0, y1 = (int(np.clip(round(v), 0, height)) for v in (b.y0, b.y1))
        mask[y0:y1, x0:x1] = True
    return float(mask.mean())


def text_area(frames: Sequence[Sequence[TextBox]], width: int, height: int) -> float:
    """Mean over the sampled frames of the fraction covered by text (0 when no frames)."""
    if not frames:
        return 0.0
    return float(np.mean([covered_fraction(f, width, height) for f in frames]))


def _norm(text: str) -> str:
    return "".join(text.split()).casefold()


def text_similarity(a: str, b: str) -> float:
    """0-1 similarity of two recognised lines, ignoring whitespace and case (OCR on small
    frames drops spaces and confuses O/0, so exact equality is too strict)."""
    a, b = _norm(a), _norm(b)
    if a == b:
        return 1.0
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def joined_text(frames: Sequence[Sequence[TextBox]], max_chars: int = 500, same: float = 0.8) -> str:
    """Distinct lines in order of first appearance, joined by ``' | '``.

    A line whose similarity to an already kept line is at least ``same`` is a repeat (the same
    subtitle read again, with OCR noise). Lines are added while the result fits in
    ``max_chars``; a first line that is longer on its own is cut.
    """
    kept: list[str] = []
    length = 0
    for boxes in frames:
        for b in boxes:
            if any(text_similarity(b.text, k) >= same for k in kept):
                continue
            extra = len(b.text) + (len(SEPARATOR) if kept else 0)
            if length + extra > max_chars:
                return SEPARATOR.join(kept) if kept else b.text[:max_chars]
            kept.append(b.text)
            length += extra
    return SEPARATOR.join(kept)


def box_iou(a: TextBox, b: TextBox) -> float:
    """Intersection over union of two boxes' rectangles."""
    iw = min(a.x1, b.x1) - max(a.x0, b.x0)
    ih = min(a.y1, b.y1) - max(a.y0, b.y0)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a.area + b.area - inter)


def _same_line(a: TextBox, b: TextBox, min_iou: float, min_similarity: float) -> bool:
    return box_iou(a, b) > min_iou and text_similarity(a.text, b.text) >= min_similarity


def text_is_stable(
    frames: Sequence[Sequence[TextBox]],
    min_iou: float = 0.5,
    min_similarity: float = 0.6,
    min_fraction: float = 0.6,
) -> bool | None:
    """Whether one text box recurs, at the same place with similar text, in at least
    ``min_fraction`` of the sampled frames.

    Every box seen is a candidate; a frame counts for it when one of the frame's boxes has
    IoU > ``min_iou`` and text similarity >= ``min_similarity`` with it. Returns False when no
    frame has text, and None (not measurable) when text was seen but fewer than 2 frames were
    sampled.
    """
    if not any(frames):
        return False
    if len(frames) < 2:
        return None
    need = min_fraction * len(frames)
    for boxes in frames:
        for cand in boxes:
            hits = sum(any(_same_line(cand, b, min_iou, min_similarity) for b in f) for f in frames)
            if hits >= need:
                return True
    return False


def overlay_text(
    frames: Sequence[Sequence[TextBox]],
    width: int,
    height: int,
    max_chars: int = 500,
    min_iou: float = 0.5,
    min_fraction: float = 0.6,
) -> OverlayText:
    """All three overlay-text scores of a clip from its sampled frames' boxes.

    Args:
        frames: one list of boxes per sampled frame (an empty list for a frame without text).
        width, height: the sampled frames' size in pixels (the boxes' coordinate system).
    """
    return OverlayText(
        text_area=round(text_area(frames, width, height), 6),
        ocr_text=joined_text(frames, max_chars),
        text_stable=text_is_stable(frames, min_iou=min_iou, min_fraction=min_fraction),
    )
