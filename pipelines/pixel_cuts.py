"""Hard cuts from the pixels where TransNetV2 scored below its threshold (see ``pixel_cuts``).

Pure NumPy on the decoded 48x27 frames; the detector cascade is in pipelines/shot_detect.py.
"""

from __future__ import annotations

import numpy as np

from pipelines.shot_detect import Transition, _local_median, _running_max, _window_hist_distance


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
      at least 3 times its neighbours' and the local median.

    Flashes and one-frame glitches pass this test and are removed afterwards by
    ``suppress_false_transitions``, like the model's own.
    """
    n = len(diff)
    if n < 3:
        return []
    prev = np.concatenate([[np.inf], diff[:-1]])
    nxt = np.concatenate([diff[1:], [np.inf]])
    around = np.maximum(np.maximum(prev, nxt), _local_median(diff, 6))
    model = _running_max(single, 2)
    strong = (diff >= 20.0) & (diff >= 2.0 * around) & (_window_hist_distance(hist, 2) >= 0.2)
    half = (model >= weak) & (diff >= 8.0) & (diff >= 3.0 * around)
    hit = (strong | half) & (model <= threshold)
    hit[0] = False
    return [
        Transition(int(t), int(t), "cut", float(single[t]))
        for t in np.flatnonzero(hit)
        if structure_diff(frames, int(t)) >= min_structure
    ]
