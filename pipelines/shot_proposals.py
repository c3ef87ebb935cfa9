"""The shot detector's cheap half: per-frame signals of the decoded 48x27 frames and the proposals
made from them (pure NumPy). ``propose`` marks the frames where a transition is *possible*
(pipelines/shot_detect.py step 1); TransNetV2 then scores only those ranges. The signals are
also what pipelines/pixel_cuts.py, pipelines/wipes.py and pipelines/split_stream.py read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIST_BINS = 16


def frame_diff(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference (0-255) of each frame to the previous one; [N], d[0] = 0.

    The exact integer sum of |b - a| over a frame divided by its size: the same float64 value as
    a float mean of the int16 differences, computed in uint8 in cache-sized chunks (5x faster)."""
    n = len(frames)
    out = np.zeros(n, np.float32)
    size = int(np.prod(frames.shape[1:])) if n else 1
    for s in range(1, n, 256):
        e = min(n, s + 256)
        a, b = frames[s - 1 : e - 1], frames[s:e]
        d = np.maximum(a, b)
        d -= np.minimum(a, b)
        out[s:e] = d.reshape(len(d), -1).sum(axis=1, dtype=np.int64) / size
    return out


def color_histograms(frames: np.ndarray) -> np.ndarray:
    """Per-frame normalised RGB histograms, [N, 3 * HIST_BINS] float32 (each channel sums to 1)."""
    n = len(frames)
    out = np.zeros((n, 3 * HIST_BINS), np.float32)
    px = frames.shape[1] * frames.shape[2] if n else 1
    chunk = 256  # bin indices of a chunk's (frame, channel, bin) fit uint16; temporaries stay in cache
    base = (np.arange(chunk, dtype=np.uint16) * 3 * HIST_BINS)[:, None, None] + (
        np.arange(3, dtype=np.uint16) * HIST_BINS)
    for s in range(0, n, chunk):
        f = frames[s : s + chunk]
        idx = (f.reshape(len(f), -1, 3) // (256 // HIST_BINS)) + base[: len(f)]
        counts = np.bincount(idx.ravel(), minlength=len(f) * 3 * HIST_BINS)
        out[s : s + len(f)] = counts.reshape(len(f), -1) / px
    return out


def _window_hist_distance(hist: np.ndarray, k: int) -> np.ndarray:
    """L1 distance/6 (0..1) between the mean histograms of frames [t-k, t) and [t, t+k)."""
    n = len(hist)
    c = np.concatenate([np.zeros((1, hist.shape[1]), np.float64), np.cumsum(hist, axis=0, dtype=np.float64)])
    t = np.arange(n)
    lo, hi = np.clip(t - k, 0, n), np.clip(t + k, 0, n)
    before = (c[t] - c[lo]) / np.maximum(t - lo, 1)[:, None]
    after = (c[hi] - c[t]) / np.maximum(hi - t, 1)[:, None]
    d = np.abs(after - before).sum(axis=1) / 6.0
    d[(t - lo) == 0] = 0.0
    return d.astype(np.float32)


def _local_median(x: np.ndarray, radius: int) -> np.ndarray:
    """Median of x over [t-radius, t+radius] (edge-padded), computed on a strided grid for speed."""
    n = len(x)
    if n == 0:
        return x
    step = max(1, radius // 2)
    centres = np.arange(0, n, step)
    pad = np.pad(x, radius, mode="edge")
    meds = np.median(np.lib.stride_tricks.sliding_window_view(pad, 2 * radius + 1)[centres], axis=1)
    meds = meds.astype(np.float32)
    return np.interp(np.arange(n), centres, meds).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Proposals:
    """Where TransNetV2 must look: short ranges around abrupt frames (hard-cut
    candidates) and wider ranges around gradual-change peaks (dissolve/fade candidates)."""

    cuts: list[tuple[int, int]]
    gradual: list[tuple[int, int]]

    def coverage(self, n: int) -> float:
        return sum(b - a for a, b in self.cuts + self.gradual) / max(1, n)


def propose(
    frames: np.ndarray,
    diff: np.ndarray | None = None,
    hist: np.ndarray | None = None,
    hist_threshold: float = 0.12,
    diff_ratio: float = 2.5,
    diff_min: float = 4.0,
    cut_pad: int = 4,
    gradual_pad: int = 16,
    decided: np.ndarray | None = None,
    explained: np.ndarray | None = None,
) -> Proposals:
    """Frame ranges [start, end) where a transition may be; the rest is safe to skip.

    A frame is proposed when its difference to the previous frame stands out from the
    local motion level (hard cuts, flashes), or when it is a local peak of the colour
    distance between the frames before and after it at a 2- or 8-frame scale
    (dissolves and fades up to ~2 s change the histogram across 16 frames). Only peaks
    are proposed, so one transition costs one short TransNetV2 window, not its whole
    neighbourhood. Abrupt frames are padded by ``cut_pad``; histogram peaks with no
    abrupt frame near them by ``gradual_pad``; cut ranges inside gradual ones are dropped.
    Abrupt frames in ``decided`` (cuts the pixels decide alone) open no cut range, and
    histogram peaks in ``explained`` (frames inside a fade through black, which the black frames
    and their luma find alone: pipelines/shot_detect.py ``black_fades``) no gradual range.
    """
    n = len(frames)
    if n < 2:
        return Proposals([], [])
    d = frame_diff(frames) if diff is None else diff
    abrupt = (d > diff_min) & (d > diff_ratio * (_local_median(d, 25) + 0.5))
    hist = color_histograms(frames) if hist is None else hist
    peaks = np.zeros(n, bool)
    for k in (2, 8):
        w = _window_hist_distance(hist, k)
        peaks |= (w > hist_threshold) & (w >= _running_max(w, k))
    near_abrupt = _running_max(abrupt.astype(np.float32), 2) > 0
    peaks &= ~near_abrupt
    if explained is not None:
        peaks &= ~explained
    gradual = _merge_ranges(np.flatnonzero(peaks), gradual_pad, n)
    cuts = [
        r
        for r in _merge_ranges(np.flatnonzero(abrupt if decided is None else abrupt & ~decided), cut_pad, n)
        if not any(a <= r[0] and r[1] <= b for a, b in gradual)
    ]
    return Proposals(cuts, gradual)


def _running_max(x: np.ndarray, radius: int) -> np.ndarray:
    """max(x[t-radius : t+radius+1]) for every t."""
    pad = np.pad(x, radius, mode="constant", constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * radius + 1)
    return win.max(axis=1)


def _merge_ranges(idx: np.ndarray, pad: int, n: int) -> list[tuple[int, int]]:
    """Merge the [i - pad, i + pad] windows of sorted indices into disjoint ranges."""
    ranges: list[tuple[int, int]] = []
    for i in idx.tolist():
        a, b = max(0, i - pad), min(n, i + pad + 1)
        if ranges and a <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], b))
        else:
            ranges.append((a, b))
    return ranges
