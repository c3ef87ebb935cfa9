"""Hard cuts from the pixels where TransNetV2 scored below its threshold (see ``pixel_cuts``).

Pure NumPy on the decoded 48x27 frames; the detector cascade is in pipelines/shot_detect.py.
"""

from __future__ import annotations

import numpy as np

from pipelines.shot_detect import Transition
from pipelines.shot_proposals import _local_median, _running_max, _window_hist_distance


def structure_diff(frames: np.ndarray, t: int) -> float:
    """Mean absolute difference of frames t-1 and t after normalising each one's luma to zero
    mean and unit deviation: large for a new picture, small for an exposure or lighting jump
    on the same picture. Sintel trailer cuts read 0.59-0.77, a light snapping on 0.34."""
    y = frames[t - 1 : t + 1].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    z = (y - y.mean(axis=(1, 2), keepdims=True)) / (y.std(axis=(1, 2), keepdims=True) + 1e-3)
    return float(np.abs(z[1] - z[0]).mean())


def pixel_cuts(
    frames: np.ndarray,
    diff: np.ndarray,
    hist: np.ndarray,
    single: np.ndarray,
    threshold: float = 0.5,
    weak: float = 0.2,
    min_structure: float = 0.45,
    isolated: float = 6.0,
) -> list[Transition]:
    """Hard cuts the pixels show plainly but TransNetV2 scored below ``threshold``.

    TransNetV2 misses some cuts in fast action: on the Sintel trailer a cut right after a
    blade sweeps across the frame scores 0.00 while the pixel difference there is 38 against
    18 and 10 for the frames around it. And with the cascade's short context it scores some
    plain cuts just under the threshold (0.21 and 0.43 on two dev-set cuts whose pixel jump
    is 6x and infinitely above their neighbours'). So a frame is a cut when the model gave no
    frame within 2 of it ``threshold``, its picture is new (``structure_diff`` at least
    ``min_structure``, so an exposure jump is not a cut), and either

    - the pixels alone are decisive: its difference to the previous frame is at least 20,
      at least twice both neighbours' differences and the local median (an isolated jump,
      not fast motion), and the colour histograms of the 2 frames before and after differ
      by at least 0.2; or
    - the model half agrees (``weak`` or more within 2 frames) and the jump is at least 8 and
      at least 3 times its neighbours' and the local median; or
    - the jump is at least 8, at least ``isolated`` (6) times its neighbours' and the local
      median, and the picture is plainly new (``structure_diff`` at least 0.6): a cut between
      two dark shots, where the model sees nothing (a dev-set cut from a dark interior to a
      night shot: difference 17 against 1.0 around it, structure 0.86, model 0.00).

    Flashes and one-frame glitches pass this test and are removed afterwards by
    ``suppress_false_transitions``, like the model's own.
    """
    n = len(diff)
    if n < 3:
        return []
    around = _around(diff)
    model = _running_max(single, 2)
    half = (model >= weak) & (diff >= 8.0) & (diff >= 3.0 * around) & (model <= threshold)
    half[0] = False
    sure = decisive(frames, diff, hist, min_structure, isolated)
    hit = (sure | half) & (model <= threshold)
    return [Transition(t, t, "cut", float(single[t])) for t in np.flatnonzero(hit).tolist()
            if sure[t] or structure_diff(frames, t) >= min_structure]


def _around(diff: np.ndarray) -> np.ndarray:
    """The larger of each frame's neighbours' differences and the local median difference."""
    prev = np.concatenate([[np.inf], diff[:-1]])
    nxt = np.concatenate([diff[1:], [np.inf]])
    return np.maximum(np.maximum(prev, nxt), _local_median(diff, 6))


def decisive(
    frames: np.ndarray, diff: np.ndarray, hist: np.ndarray, min_structure: float = 0.45,
    isolated: float = 6.0,
) -> np.ndarray:
    """bool [N]: the frames that ``pixel_cuts`` makes cuts whatever the model says (its first and
    third rules). The cascade sends no TransNetV2 window to a cut proposal that holds only such
    frames: the model's verdict there could not change the outcome (a cut where it fires, the
    pixels' cut where it does not)."""
    n = len(diff)
    out = np.zeros(n, bool)
    if n < 3:
        return out
    around = _around(diff)
    strong = (diff >= 20.0) & (diff >= 2.0 * around) & (_window_hist_distance(hist, 2) >= 0.2)
    alone = (diff >= 8.0) & (diff >= isolated * around)
    for t in np.flatnonzero(strong | alone).tolist():
        if t > 0:
            st = structure_diff(frames, t)
            out[t] = st >= min_structure and (bool(strong[t]) or st >= 0.6)
    return out


def same_picture(frames: np.ndarray, t: int, patch: int = 6, stride: int = 3, ncc: float = 0.7) -> float:
    """Fraction of frame t's patches that still show frame t-1's picture.

    A patch (``patch`` x ``patch`` luma pixels, every ``stride``) is the same picture when both
    frames are textured there (deviation above 2) and their normalised cross-correlation is at
    least ``ncc``: true after a brightness or contrast change, or where nothing changed. Patches
    touching a flat row or column of both frames (letterbox and pillarbox bars) do not count
    as the same, so the bars' edges are not mistaken for a kept picture. A cut replaces the
    whole picture; on the dev set its 30 labelled hard cuts read at most 0.12, while the UI
    changes inside a screen recording (an overview dimming the desktop, a window closing over
    a still wallpaper) read 0.27-0.99.
    """
    y = frames[t - 1 : t + 1].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    windows = [np.lib.stride_tricks.sliding_window_view(v, (patch, patch))[::stride, ::stride]
               .reshape(-1, patch * patch) for v in y]
    a, b = (w - w.mean(axis=1, keepdims=True) for w in windows)
    na, nb = np.sqrt((a * a).sum(axis=1)), np.sqrt((b * b).sum(axis=1))
    flat_rows = (y.std(axis=2) < 2).all(axis=0)
    flat_cols = (y.std(axis=1) < 2).all(axis=0)
    flat = (flat_rows[:, None] | flat_cols[None, :]).astype(np.float32)
    on_bar = np.lib.stride_tricks.sliding_window_view(flat, (patch, patch))[::stride, ::stride]
    on_bar = on_bar.reshape(-1, patch * patch).max(axis=1) > 0
    textured = (na > 2 * patch) & (nb > 2 * patch) & ~on_bar
    corr = (a * b).sum(axis=1) / (na * nb + 1e-6)
    return float((textured & (corr >= ncc)).sum() / max(1, len(a)))


def unchanged_fraction(frames: np.ndarray, t: int, tol: int = 3, dark: float = 24.0) -> float:
    """Fraction of frame t's pixels that are not dark in both frames and changed by at most ``tol``
    in every channel since frame t-1 (a still part of the picture; black bars do not count)."""
    a, b = frames[t - 1].astype(np.int16), frames[t].astype(np.int16)
    w = np.array([0.299, 0.587, 0.114], np.float32)
    lit = ~((a @ w < dark) & (b @ w < dark))
    same = np.abs(b - a).max(axis=2) <= tol
    return float((same & lit).sum() / max(1, lit.sum()))


def drop_partial_changes(
    trs: list[Transition], frames: np.ndarray, max_same: float = 0.25, max_unchanged: float = 0.3
) -> list[Transition]:
    """Drop hard cuts after which much of the old picture is still there: a screen recording's UI
    change (a menu, a dialog, an overview over the same desktop), a caption or an overlay
    appearing, a light switched on. A cut replaces the picture: on the dev set its hard cuts
    keep at most 0.12 of the patches (``same_picture``) and 0.07 of the lit pixels
    (``unchanged_fraction``); the screencast's UI changes keep 0.27-0.99 and 0.48-0.67."""
    n = len(frames)
    return [t for t in trs if t.kind != "cut" or not 0 < t.start < n
            or (same_picture(frames, t.start) < max_same
                and unchanged_fraction(frames, t.start) < max_unchanged)]
