"""Shot-transition detection on the decoded 48x27 frames: pure NumPy functions.

The detector is a cascade:

1. ``propose`` (pipelines/shot_proposals.py): cheap per-frame signals (pixel difference to the previous frame
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

# the signals and proposals (pipelines/shot_proposals.py), importable from here as before
from pipelines.shot_proposals import (  # noqa: F401
    HIST_BINS,
    Proposals,
    _local_median,
    _merge_ranges,
    _running_max,
    _window_hist_distance,
    color_histograms,
    frame_diff,
    propose,
)


@dataclass(frozen=True, slots=True)
class Transition:
    """Frames [start, end) of a transition; the next shot starts at ``end``.

    A hard cut has start == end == the first frame of the new shot.
    """

    start: int
    end: int
    kind: str  # 'cut' | 'dissolve' | 'fade'
    score: float


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


def black_fades(black: np.ndarray, luma: np.ndarray) -> list[Transition]:
    """The fades through black that the frames' luma alone shows: every run of black frames
    strictly inside the video, widened over the fade-out before it (luma falling) and the
    fade-in after it (luma rising)."""
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
    return fades


def fade_frames(black: np.ndarray, luma: np.ndarray) -> np.ndarray:
    """[N] bool: the frames inside ``black_fades`` (start to end, both included)."""
    mask = np.zeros(len(black), bool)
    for f in black_fades(black, luma):
        mask[f.start : f.end + 1] = True
    return mask


def add_fades(trs: list[Transition], black: np.ndarray, luma: np.ndarray) -> list[Transition]:
    """Fold fades through black into single 'fade' transitions: each of ``black_fades`` is one
    fade transition; model events that overlap it are absorbed into it.
    """
    fades = black_fades(black, luma)
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
