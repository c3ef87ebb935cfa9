"""Shot-transition detection on the decoded 48x27 frames: pure NumPy functions.

The detector is a cascade:

1. ``propose``: cheap per-frame signals (pixel difference to the previous frame
   and colour-histogram distance between the frames before and after, at several
   time scales) mark the frames where a transition is *possible*. Anything still
   or smoothly moving is skipped. Recall comes first: proposals are padded and
   merged generously.
2. TransNetV2 scores only the proposed ranges (pipelines/transnet.py).
3. ``transitions_from_predictions`` turns probabilities into transitions: a hard
   cut at the exact frame where the new shot starts (the pixel-difference peak),
   or a gradual span (dissolve, or a fade when it passes through black).
4. ``suppress_false_transitions`` removes flashes, occlusions and camera whips: if
   the picture just before and just after a short event is the same, no shot changed.
5. ``shots_from_transitions`` turns transitions into contiguous Shot spans.

Cuts that the pixels show but TransNetV2 missed come from pipelines/pixel_cuts.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIST_BINS = 16


@dataclass(frozen=True, slots=True)
class Transition:
    """Frames [start, end) of a transition; the next shot starts at ``end``.

    A hard cut has start == end == the first frame of the new shot.
    """

    start: int
    end: int
    kind: str  # 'cut' | 'dissolve' | 'fade'
    score: float


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
) -> Proposals:
    """Frame ranges [start, end) where a transition may be; the rest is safe to skip.

    A frame is proposed when its difference to the previous frame stands out from the
    local motion level (hard cuts, flashes), or when it is a local peak of the colour
    distance between the frames before and after it at a 2- or 8-frame scale
    (dissolves and fades up to ~2 s change the histogram across 16 frames). Only peaks
    are proposed, so one transition costs one short TransNetV2 window, not its whole
    neighbourhood. Abrupt frames are padded by ``cut_pad``; histogram peaks with no
    abrupt frame near them by ``gradual_pad``; cut ranges inside gradual ones are dropped.
    Abrupt frames in ``decided`` (cuts the pixels decide alone) open no cut range.
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
    gradual = _merge_ranges(np.flatnonzero(peaks & ~near_abrupt), gradual_pad, n)
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


def transitions_from_predictions(
    single: np.ndarray,
    many: np.ndarray,
    diff: np.ndarray,
    black: np.ndarray,
    threshold: float = 0.5,
    slow_frames: int = 8,
    slow_single: float = 0.15,
) -> list[Transition]:
    """Turn TransNetV2 probabilities into transitions with exact frames.

    An event is a run of frames whose single-frame probability exceeds ``threshold``,
    widened to the run of many-hot probability > 0.5 around it. An event of <= 3
    frames, or one whose pixel change is concentrated in one frame, is a hard cut at
    the pixel-difference peak; longer events are gradual ('fade' when they reach a
    black frame, otherwise 'dissolve').

    Slow dissolves and fades (2-3 s) never raise the single-frame probability to 0.5: on the
    Sintel trailer's two long dissolves it peaks at 0.22 and 0.27 while the many-hot output
    stays above 0.5 for 22 and 37 frames. So a run of many-hot > 0.5 of at least
    ``slow_frames`` frames whose single-frame peak reaches ``slow_single`` is a gradual event
    too.
    """
    n = len(single)
    out: list[Transition] = []
    above = single > threshold
    i = 0
    while i < n:
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and above[j + 1]:
            j += 1
        s, e = i, j
        while s - 1 >= 0 and many[s - 1] > 0.5:
            s -= 1
        while e + 1 < n and many[e + 1] > 0.5:
            e += 1
        score = float(single[i : j + 1].max())
        lo, hi = max(1, s - 1), min(n, e + 3)
        seg = diff[lo:hi]
        peak = lo + int(np.argmax(seg)) if len(seg) else min(n - 1, e + 1)
        concentrated = len(seg) > 0 and seg.max() > 0.6 * seg.sum()
        if e - s + 1 <= 3 or concentrated:
            out.append(Transition(peak, peak, "cut", score))
        else:
            out.append(Transition(s, e + 1, _gradual_kind(black, s, e), score))
        i = max(j, e) + 1
    taken = np.zeros(n + 1, bool)
    for t in out:
        taken[t.start : max(t.end, t.start + 1)] = True
    for s, e in _runs(many > 0.5):
        if e - s >= slow_frames and not taken[s:e].any() and single[s:e].max() >= slow_single:
            out.append(Transition(s, e, _gradual_kind(black, s, e - 1), float(single[s:e].max())))
    return sorted(out, key=lambda t: t.start)


def _gradual_kind(black: np.ndarray, s: int, e: int) -> str:
    return "fade" if black[s : e + 1].any() else "dissolve"


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def black_frames(frames: np.ndarray, black_luma: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """(is_black [N] bool, mean luma [N] float32): black = dark, flat and empty.

    Dark and flat rule out a dark scene; empty rules out a card of small text on black (a
    title or credits card is a shot, not the black of a fade): at most 0.3% of the pixels may
    be brighter than ``black_luma + 4``. Measured on the Sintel trailer's 48x27 frames: its
    black frames have 0 such pixels, mid-fade frames 1, its title cards 9-15 of 1,296.
    """
    n = len(frames)
    luma = np.zeros(n, np.float32)
    std = np.zeros(n, np.float32)
    bright = np.zeros(n, np.float32)
    for s in range(0, n, 256):  # cache-sized float temporaries: 10x faster than 4096 frames at once
        y = frames[s : s + 256].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        luma[s : s + len(y)] = y.mean(axis=(1, 2))
        std[s : s + len(y)] = y.std(axis=(1, 2))
        bright[s : s + len(y)] = (y > black_luma + 4).mean(axis=(1, 2))
    return (luma < black_luma) & (std < 12.0) & (bright <= 0.003), luma


def add_fades(trs: list[Transition], black: np.ndarray, luma: np.ndarray) -> list[Transition]:
    """Fold fades through black into single 'fade' transitions.

    Every run of black frames strictly inside the video, widened over the fade-out
    before it (luma falling) and the fade-in after it (luma rising), is one fade
    transition; model events that overlap it are absorbed into it.
    """
    n = len(black)
    fades: list[Transition] = []
    i = 0
    while i < n:
        if not black[i]:
            i += 1
            continue
        j = i
        while j < n and black[j]:
            j += 1
        if i > 0 and j < n:
            a, b = i, j
            while a - 1 > 0 and luma[a - 1] > luma[a] + 0.5:
                a -= 1
            while b < n - 1 and luma[b + 1] > luma[b] + 0.5:
                b += 1
            # a is the last steady frame before the fade-out, b the first steady one after the fade-in.
            fades.append(Transition(a + 1 if a < i else a, b, "fade", 1.0))
        i = j
    out = list(fades)
    for t in trs:
        hit = [k for k, f in enumerate(out[: len(fades)]) if t.start <= f.end and t.end >= f.start - 1]
        if hit:
            k = hit[0]
            f = out[k]
            out[k] = Transition(min(f.start, t.start), max(f.end, t.end), "fade", max(f.score, t.score))
        else:
            out.append(t)
    return sorted(out, key=lambda t: t.start)


def _pair_diff(frames: np.ndarray, a: int, b: int) -> float:
    """Mean absolute difference (0-255) between frames a and b."""
    return float(np.abs(frames[b].astype(np.int16) - frames[a].astype(np.int16)).mean())


def drop_edge_fades(
    trs: list[Transition], black: np.ndarray, luma: np.ndarray, min_black_shot: int = 25
) -> list[Transition]:
    """Drop transitions out of black at the very start and into black at the very end.

    A video that opens on black and fades (or cuts) into its first picture has no shot before
    that picture; one that ends by going to black has none after. The black frames at each end
    are widened over the fade next to them (luma rising after the opening black, falling
    before the closing black), as ``add_fades`` widens inner fades. One exception: a hard cut
    to (or from) a black stretch of at least ``min_black_shot`` frames is kept, so that the
    black becomes a shot of its own that curation records and rejects as ``black`` instead of
    padding the neighbouring clip with it.
    """
    n = len(black)
    if n == 0 or black.all():
        return trs
    keep = list(trs)
    if black[0]:
        b = lead = int(np.argmin(black))  # first non-black frame
        while b < n - 1 and luma[b + 1] > luma[b] + 0.5:
            b += 1
        long_head = lead >= min_black_shot
        keep = [t for t in keep if t.start > b + 1 or (t.kind == "cut" and t.start == lead and long_head)]
    if black[-1]:
        a = last = n - 1 - int(np.argmin(black[::-1]))  # last non-black frame
        while a > 0 and luma[a - 1] > luma[a] + 0.5:
            a -= 1
        long_tail = n - 1 - last >= min_black_shot
        keep = [t for t in keep
                if max(t.end, t.start + 1) < a or (t.kind == "cut" and t.start == last + 1 and long_tail)]
    return keep


def suppress_false_transitions(
    trs: list[Transition],
    frames: np.ndarray,
    diff: np.ndarray,
    max_frames: int = 8,
    resume_ratio: float = 0.4,
) -> list[Transition]:
    """Drop events after which the same picture resumes (flashes, occlusions).

    An event spanning at most ``max_frames`` is false when a frame after it is close to the
    frame just before it: their difference is below ``resume_ratio`` of the event's own jump
    (the difference across it) *and* no more than ordinary frame-to-frame motion there
    accounts for. Both tests are needed on real footage: the relative one keeps cuts between
    dark or similar-looking shots (their whole jump is small, and the new shot stays as far
    from the old one as the jump), the motion one keeps cuts in busy scenes. A cut whose new
    picture is the one from a few frames before it is the way out of a flash whose way in the
    model missed, and is dropped too.
    """
    n = len(frames)

    def motion(a: int, b: int) -> float:
        lo, hi = max(1, a - 12), min(n, b + 13)
        ctx = np.concatenate([diff[lo : a + 1], diff[b + 1 : hi]])
        return float(np.median(ctx)) if len(ctx) else 0.0

    def resumes(before: int, after: int, jump: float) -> bool:
        """Whether frame ``after`` shows the picture of frame ``before`` again."""
        if before < 0 or after >= n or after <= before:
            return False
        d = _pair_diff(frames, before, after)
        bound = max(4.0, 3.0 * motion(before, after) * max(1, after - before) ** 0.5)
        return d <= resume_ratio * jump and d <= bound

    keep: list[Transition] = []
    i = 0
    while i < len(trs):
        t = trs[i]
        first = max(t.end, t.start + 1)
        jump = float(diff[t.start : first + 1].max(initial=0.0))  # the change across the event
        before = t.start - 1  # the picture before the change began (a ramp into a cut is part of it)
        while before > 0 and before > t.start - max_frames and diff[before] > 0.5 * jump:
            before -= 1
        resume = next(
            (r for r in range(first, t.start + max_frames + 1)
             if t.kind != "fade" and resumes(before, r, jump)),
            None,
        )
        came_back = t.kind == "cut" and 0 < t.start < n and any(
            resumes(b, t.start, float(diff[t.start]))
            for b in range(t.start - 2, t.start - max_frames - 2, -1)
        )
        if came_back:
            i += 1
            continue
        if resume is None:
            keep.append(t)
            i += 1
            continue
        i += 1  # drop t and every event that starts before the picture resumed
        while i < len(trs) and trs[i].start <= resume:
            i += 1
    return keep


def shots_from_transitions(
    trs: list[Transition], n_frames: int, min_shot_frames: int = 1
) -> list[tuple[int, int, Transition | None]]:
    """Contiguous shots [start, end) between transitions, each with the transition that opened it.

    Shots shorter than ``min_shot_frames`` are merged into the previous shot.
    """
    shots: list[tuple[int, int, Transition | None]] = []
    start, opened_by = 0, None
    for t in sorted(trs, key=lambda t: t.start):
        if t.start - start >= min_shot_frames or not shots and t.start > start:
            shots.append((start, t.start, opened_by))
            start, opened_by = t.end, t
        elif shots:  # too short: extend the previous shot over it
            s0, _, ob = shots[-1]
            shots[-1] = (s0, t.start, ob)
            start, opened_by = t.end, t
        else:
            start, opened_by = t.end, t
    if n_frames - start > 0:
        shots.append((start, n_frames, opened_by))
    return shots
