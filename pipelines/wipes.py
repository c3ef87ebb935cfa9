"""Wipes and slides: gradual transitions that TransNetV2 does not see (pure NumPy, 48x27 frames).

TransNetV2 was trained on hard cuts and dissolves. A wipe (the new shot uncovers the old one
behind a moving straight edge) or a slide (the new shot pushes the old one out of the frame)
scores next to nothing: on the dev set's compilation a ``wipeleft`` reads single-frame
probability <= 0.01 and a ``slideleft`` <= 0.02 over their 14 frames. Their pixels are plain,
though: every frame of the span is the picture before it and the picture after it, put side by
side at one position that moves one way across the span. ``find_wipes`` tests exactly that, for
the four directions of both kinds, on the runs of frames whose pixels keep changing.
"""

from __future__ import annotations

import numpy as np

from pipelines.shot_detect import Transition
from pipelines.shot_proposals import _local_median

KINDS = ("wipe", "slide")


def column_distances(span: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of absolute differences between every column of every frame of ``span`` [T, H, W, C]
    and every column of ``a`` and of ``b`` [H, W, C]: two float32 [T, W (frame), W (picture)].

    One ``cdist`` (cityblock, float64) per picture over the columns as H*C vectors: on 40-frame
    48x27 spans 4.4 instead of 111 ms for the [T, H, W, W, C] broadcast, and the same sums (exact
    for whole-number pixels)."""
    from scipy.spatial.distance import cdist

    t, h, w, c = span.shape
    cols = span.transpose(0, 2, 1, 3).reshape(t * w, h * c).astype(np.float64)
    to_a, to_b = (cdist(cols, p.transpose(1, 0, 2).reshape(p.shape[1], h * c).astype(np.float64), "cityblock")
                  .astype(np.float32).reshape(t, w, p.shape[1]) for p in (a, b))
    return to_a, to_b


def composite_errors(to_a: np.ndarray, to_b: np.ndarray, kind: str, reverse: bool) -> np.ndarray:
    """Summed absolute error of every frame against every position p = 0..W of a ``kind``
    transition along the columns, from the ``column_distances``: float32 [T, W + 1].

    At position p the new picture holds the last p columns: a wipe shows ``a[:, :W-p]`` then
    ``b[:, W-p:]`` in place; a slide shows ``a[:, p:]`` (moved p columns towards the start) then
    ``b[:, :p]``. ``reverse``: the same, entering from the first column. The error is a sum over
    columns, so it comes from the column-to-column distances instead of W + 1 composed frames.
    """
    if reverse:
        to_a, to_b = to_a[:, ::-1, ::-1], to_b[:, ::-1, ::-1]
    t, w = to_a.shape[0], to_a.shape[1]
    if kind == "wipe":
        zero = np.zeros((t, 1), np.float32)
        ca = np.concatenate([zero, np.cumsum(np.diagonal(to_a, axis1=1, axis2=2), axis=1)], axis=1)
        cb = np.concatenate([zero, np.cumsum(np.diagonal(to_b, axis1=1, axis2=2), axis=1)], axis=1)
        keep = w - np.arange(w + 1)  # columns still showing the old picture at each position
        return ca[:, keep] + cb[:, w : w + 1] - cb[:, keep]
    cols, src, from_b = _slide_index(w)
    return np.where(from_b, to_b[:, cols, src], to_a[:, cols, src]).sum(axis=2)


def _slide_index(w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a slide at every position p (rows) and every column j: (j, the source column, whether
    it comes from the new picture), each int/bool [W + 1, W]."""
    p, j = np.mgrid[0 : w + 1, 0:w]
    from_b = j >= w - p
    return j, np.where(from_b, j - (w - p), j + p), from_b


def _oriented(x: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    """Frames [..., H, W, C] turned so that the transition runs along the columns, towards the end."""
    if axis == 0:
        x = np.swapaxes(x, -3, -2)
    return x[..., ::-1, :] if reverse else x


def fits_wipe(frames: np.ndarray, s: int, e: int, rel: float = 0.45, tol: float = 16.0) -> bool:
    """Whether frames [s, e] are a wipe or slide from frame s-1 to frame e+1 (see the module doc).

    Every frame of the span must be explained by one direction's composition at a position that
    never moves back, with a mean error at most ``tol`` (the shots keep moving during the
    transition), three quarters of them with at most ``rel`` of their distance to the nearer of
    the two pictures; and the two pictures must differ (a new shot), and the positions
    must pass well inside the frame (not a strip at one edge)."""
    if s < 1 or e + 1 >= len(frames) or e < s:
        return False
    a, b = frames[s - 1].astype(np.float32), frames[e + 1].astype(np.float32)
    if np.abs(a - b).mean() < 12.0:
        return False
    span = frames[s : e + 1].astype(np.float32)
    near = np.minimum(np.abs(span - a).mean(axis=(1, 2, 3)), np.abs(span - b).mean(axis=(1, 2, 3)))
    rows = np.arange(len(span))
    for axis in (0, 1):
        parts = [_oriented(x, axis, False) for x in (span, a, b)]
        # the column profiles' error bounds the frames' from below: a cheap first test
        rough_d = column_distances(*(x.mean(axis=-3, keepdims=True) for x in parts))
        full_d: tuple[np.ndarray, np.ndarray] | None = None
        size = parts[0].shape[-3] * parts[0].shape[-2] * parts[0].shape[-1]
        for kind in KINDS:
            for reverse in (False, True):
                rough = composite_errors(*rough_d, kind, reverse) / (size / parts[0].shape[-3])
                rough_best = rough.min(axis=1)
                if not ((rough_best <= tol).all() and bool((np.diff(rough.argmin(axis=1)) >= -1).all())
                        and (rough_best <= rel * near).mean() >= 0.75):
                    continue
                full_d = full_d or column_distances(*parts)
                err = composite_errors(*full_d, kind, reverse) / size
                pos = err.argmin(axis=1)
                best = err[rows, pos]
                length = err.shape[1] - 1
                if (
                    (best <= tol).all()
                    and (best <= rel * near).mean() >= 0.75
                    and bool((np.diff(pos) >= 0).all())
                    and pos[0] < 0.5 * length < pos[-1]
                ):
                    return True
    return False


def find_wipes(
    frames: np.ndarray, diff: np.ndarray, taken: list[Transition], min_frames: int = 4, max_frames: int = 40
) -> list[Transition]:
    """Wipe and slide transitions (kind 'dissolve': a gradual change between two shots) over runs
    of ``min_frames``..``max_frames`` frames whose difference to the previous frame stays above 2
    and above twice the local median, away from the transitions already ``taken``."""
    n = len(diff)
    if n < min_frames + 2:
        return []
    moving = (diff > 2.0) & (diff > 2.0 * _local_median(diff, 50))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], moving.astype(np.int8), [0]])))
    out: list[Transition] = []
    for s, e in zip(edges[::2].tolist(), (edges[1::2] - 1).tolist(), strict=True):
        # the first changed frame s already differs from s-1; the last one e differs from e-1
        if not min_frames <= e - s + 1 <= max_frames:
            continue
        if any(t.start - 2 <= e and s <= max(t.end, t.start) + 2 for t in taken):
            continue
        # the run's ends may hold a frame or two of the shots' own motion (small next to the
        # transition's changes; a pan that goes on past the fitted span is no slide)
        fit = next(((a, b) for a in range(s, s + 3) for b in range(e, e - 3, -1)
                    if b - a >= min_frames - 1 and _small_ends(diff, s, a, b, e)
                    and fits_wipe(frames, a, b - 1)), None)
        if fit is not None:
            out.append(Transition(fit[0], fit[1], "dissolve", 1.0))
    return out


def _small_ends(diff: np.ndarray, s: int, a: int, b: int, e: int) -> bool:
    """Whether the run's frames left out of a fit [a, b] (s..a-1 and b+1..e) changed at most half
    as much as the fitted frames do (median)."""
    left_out = np.concatenate([diff[s:a], diff[b + 1 : e + 1]])
    return not len(left_out) or bool(left_out.max() <= 0.5 * np.median(diff[a : b + 1]))
