"""Picture-quality measurements of a clip (``ClipScores`` "Quality"), as pure functions.

Inputs are the decode pass's frames (pipelines/clip_frames.py), never a new decode: the sparse
frames (about 2 fps, fitted into 256x144) for sharpness, brightness, black frames and bars,
the tiny frames (every frame, 48x27) for frozen frames. Luma is BT.601 on full-range RGB, so
video black (Y=16) reads 0 and video white (Y=235) reads 255.

Choices, each measured on x264-encoded test clips (tests/test_quality.py):

- A frame is *black* as the shot detector defines it (``shot_detect.black_frames``: mean
  luma below 20 and flat). A very dark but visible picture (mandelbrot at 20% luma, mean
  about 26) is not black; the frames after a fade-out read 0.
- A *bar* line (row or column) has its 95th-percentile luma at most ``border_luma`` (10) in
  at least ``bar_frames`` (80%) of the non-black frames, and the picture 2 lines inside the
  bar is at least ``bar_step`` (8) brighter: bars end in a step. Encoded bars read 0-2; the
  dark vignette at the edge of a picture at 12% luma reads 4 but rises gradually. Black
  frames do not vote, so a fade to black yields no bars; a box that would leave less than
  ``min_picture`` of the frame is dark content, not bars, and is ignored. Dark content
  that ends in a sharp step at a frame edge in most frames is still taken for a bar.
- Blur, luma and clipped are measured inside the bars (bars are flat and exactly black, they
  would read as blurry and clipped). Blur skips ``_EDGE_INSET`` more pixels beside a bar:
  the bar's edge is a strong artificial edge.
- A consecutive tiny-frame pair is *identical* when its largest difference is at most
  ``frozen_max_diff`` (4) and its mean difference at most ``frozen_mean_diff`` (0.05, in
  0-255 levels). x264 keeps refining a held frame (differences up to 4 at crf 18, mean
  about 0.02), while faint grain that survives the encode changes many pixels a little
  (noise=alls=3 at crf 18: mean about 0.07). Grain the encoder removed cannot be seen in
  the decoded frames and counts as frozen.
- ``frozen`` counts identical pairs only in runs lasting at least ``frozen_min_s`` (0.25 s,
  ``QualityScorer``). On the dev set (issue 13, bench/filters_devset.py) every identical pair
  of good footage sits in short runs: test_video.mp4 (a 30 fps highway camera stored at
  59.94 fps) 0.38-0.49 of its pairs identical in runs of 1-2, minions.mp4 (CG animation,
  30 fps) 0.30-0.44 in runs of mostly 1-2 (longest 11 in 30 s), the cap12/cap13 webcams
  0.10-0.27 in runs of 1-4; counted pair by pair they sat just under ``max_frozen`` (0.5)
  and some clips crossed it. A held frame is one run: 1.0 either way.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

CLIP_LOW, CLIP_HIGH = 4, 251  # luma at or beyond these ends counts as clipped
_EDGE_INSET = 2  # sparse pixels dropped next to a bar before measuring blur


class Box(NamedTuple):
    """A rectangle in pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int


def _bar_run(dark: np.ndarray, means: np.ndarray, bar_frames: float, bar_step: float) -> int:
    """How many lines from one edge are a bar.

    Args:
        dark: bool [k, n], whether each line (edge first) is dark in each voting frame.
        means: [n] median over the voting frames of each line's mean luma.
    """
    is_bar = dark.mean(axis=0) >= bar_frames
    run = int(np.argmin(is_bar)) if not is_bar.all() else len(is_bar)
    inner = run + _EDGE_INSET  # past the line that mixes bar and picture
    if run == 0 or inner >= len(means):
        return 0
    return run if means[inner] - means[:run].max() >= bar_step else 0


def bar_box(
    lumas: np.ndarray,
    black: np.ndarray,
    border_luma: float = 10.0,
    bar_frames: float = 0.8,
    bar_step: float = 8.0,
    min_picture: float = 0.2,
) -> Box:
    """The picture inside letterbox/pillarbox bars, in the frames' pixels.

    Args:
        lumas: float luma [k, h, w] of the sampled frames.
        black: bool [k], the black frames (``shot_detect.black_frames``): they do not vote.
        border_luma: a row or column is dark when its 95th-percentile luma is at most this.
        bar_frames: a line is a bar when it is dark in at least this fraction of the
            non-black frames.
        bar_step: the picture just inside a bar must be at least this much brighter (mean
            luma) than the bar: bars end in a step, dark vignettes in a gradient.
        min_picture: bars leaving less than this fraction of the width or height are
            taken for dark content: the full frame is returned.

    Returns:
        The box; the full frame when there are no bars or no non-black frame.
    """
    _, h, w = lumas.shape
    full = Box(0, 0, w, h)
    voters = lumas[~black]
    if len(voters) == 0:
        return full
    runs = []
    for axis in (2, 1):  # rows (top, bottom), then columns (left, right)
        dark = np.percentile(voters, 95, axis=axis) <= border_luma  # [k, lines]
        means = np.median(voters.mean(axis=axis), axis=0)  # [lines]
        runs.append(_bar_run(dark, means, bar_frames, bar_step))
        runs.append(_bar_run(dark[:, ::-1], means[::-1], bar_frames, bar_step))
    top, bottom, left, right = runs
    box = Box(left, top, w - left - right, h - top - bottom)
    if box.w < min_picture * w or box.h < min_picture * h:
        return full
    return box


def source_box(box: Box, frame_size: tuple[int, int], source_size: tuple[int, int]) -> Box:
    """``box`` in a frame of ``frame_size`` (w, h) scaled to ``source_size`` (w, h).

    Edges are rounded to the nearest source pixel, then moved inward to even coordinates
    (4:2:0 crops need even sides); an edge at the frame border stays there.
    """
    (fw, fh), (sw, sh) = frame_size, source_size
    x0, x1 = round(box.x * sw / fw), round((box.x + box.w) * sw / fw)
    y0, y1 = round(box.y * sh / fh), round((box.y + box.h) * sh / fh)
    x0, y0 = x0 + x0 % 2, y0 + y0 % 2
    x1 = x1 if x1 == sw else x1 - x1 % 2
    y1 = y1 if y1 == sh else y1 - y1 % 2
    return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def inside(lumas: np.ndarray, box: Box, inset: int = 0) -> np.ndarray:
    """Luma [k, h', w'] of the frames inside ``box``, less ``inset`` pixels beside each bar
    (a side of the box that is not the frame border)."""
    _, h, w = lumas.shape
    x0 = box.x + (inset if box.x > 0 else 0)
    y0 = box.y + (inset if box.y > 0 else 0)
    x1 = box.x + box.w - (inset if box.x + box.w < w else 0)
    y1 = box.y + box.h - (inset if box.y + box.h < h else 0)
    if x1 - x0 < 3 or y1 - y0 < 3:  # too thin to inset: keep the box as is
        x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h
    return lumas[:, y0:y1, x0:x1]


def blur_score(lumas: np.ndarray, box: Box) -> float:
    """Median over frames of the variance of the 3x3 Laplacian of the luma inside ``box``.

    Args:
        lumas: float32 luma [k, h, w], k >= 1.
        box: the picture inside the bars (``bar_box``).

    Sharp footage at 256x144 reads several hundred; a gaussian blur of sigma 2 source
    pixels (320x180) about 16, sigma 6 about 5. It scales with contrast squared, so a very
    dark picture reads low too (mandelbrot at 20% luma: about 24).
    """
    picture = inside(lumas, box, _EDGE_INSET)
    return float(np.median([cv2.Laplacian(frame, cv2.CV_32F).var() for frame in picture]))


def clipped_fraction(lumas: np.ndarray) -> float:
    """Fraction of luma values at the ends of the range (<= CLIP_LOW or >= CLIP_HIGH)."""
    return float(((lumas <= CLIP_LOW) | (lumas >= CLIP_HIGH)).mean())


def identical_pairs(tiny: np.ndarray, max_diff: int = 4, mean_diff: float = 0.05) -> np.ndarray:
    """bool [n-1]: whether each consecutive frame pair is identical up to encoder noise.

    Args:
        tiny: uint8 [n, h, w, 3] consecutive frames.
        max_diff: a pair is identical when no value differs by more than this ...
        mean_diff: ... and the mean absolute difference is at most this (0-255 levels).
    """
    if len(tiny) < 2:
        return np.zeros(0, bool)
    x = np.asarray(tiny, dtype=np.int16).reshape(len(tiny), -1)
    d = np.abs(np.diff(x, axis=0))
    return np.asarray((d.max(axis=1) <= max_diff) & (d.mean(axis=1) <= mean_diff))


def frozen_fraction(tiny: np.ndarray, max_diff: int = 4, mean_diff: float = 0.05, min_run: int = 1) -> float:
    """Fraction of consecutive frame pairs that are identical up to encoder noise
    (``identical_pairs``) and part of a run of at least ``min_run`` identical pairs; 0.0 for
    fewer than two frames.

    ``min_run`` > 1 tells a held picture from frames repeated by design: animation drawn on
    twos or threes and 30 fps video doubled to 60 fps repeat each picture once or twice
    (runs of 1-2 pairs, up to half of all pairs), a frozen picture holds for a run.
    """
    same = identical_pairs(tiny, max_diff, mean_diff)
    if len(same) == 0:
        return 0.0
    if min_run > 1:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], same.astype(np.int8), [0]])))
        same = np.zeros_like(same)
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            same[a:b] = b - a >= min_run
    return float(same.mean())
