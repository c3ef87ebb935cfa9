"""How much a clip moves and how its camera moves (``ClipScores`` "Motion"), as pure functions.

Method: OpenCV Farneback dense optical flow between consecutive sparse frames of the clip
(about 0.5 s apart), on grayscale frames resized so the long side is ``FLOW_SIZE`` (128) px
and started from the global shift phase correlation finds (``dense_flow``). A displacement in
px, over the flow image width and the time between the frames (source frame indices over the
clip's fps), gives frame widths per second, whatever the resolution and sampling rate.

- ``motion`` is the median over frame pairs of the mean flow magnitude. Letterbox bars count
  as still picture.
- ``camera_motion`` fits a similarity model to each pair's flow (translation tx, ty, scale s,
  rotation r about the frame centre; closed-form least squares) and classifies the medians
  over pairs. The label names the *camera's* movement: the camera panning right moves the
  content left (tx < 0), tilting up moves it down (ty > 0, image y grows downwards), zooming
  in spreads it out (s > 0). 'static' when the motion is below ``static_motion`` (0.005: held
  and grainy still shots measure at most 0.002, a cellular automaton about 0.01, a pan
  across the frame in 16 s 0.06); 'mixed' when the model explains less than ``min_explained`` of the
  flow energy (objects moving on their own, shake, a pan that reverses) or no single
  component carries ``min_share`` of the speed.
- Each pair is checked against two consecutive tiny frames (48x27, 1/fps apart) at its start,
  which take over when they move faster than ``fast_motion`` (``with_fast_motion``): 0.5 s
  apart, a whip pan leaves too little overlap to follow.
- A clip with fewer than two sparse frames (shorter than the sparse step) uses its tiny
  frames about 0.5 s apart instead; a clip of a single frame has no motion (None).

Known limit: a small object moving faster than ~0.1 frame widths per 0.5 s over a still
background is out of Farneback's reach at 128 px, so a static shot with a fast small subject
reads low (its flow is mostly the background's zero anyway).

Speed (2-core machine, one core used, MotionScorer on a 5 s 640x360 clip = 10 sparse frames
at 256x144, frames read from disk included): ~26 clips/s when the camera pans (two Farneback
runs a pair), ~44 clips/s otherwise. PyAV ``export_mvs`` (the codec's motion vectors) on the
same clip takes ~75 ms: a new decode (50 ms alone at 640x360, far more at 1080p) that breaks
"decode once", and block vectors that follow the encoder's rate decisions rather than the
true motion. Farneback on the frames already decoded is the method.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

FLOW_SIZE = 128  # long side of the flow images, px
_PHASE_GAIN = 0.8  # the flow from the phase-correlation shift must cut the warp error by 20 %
_MARGIN = 0.08  # fraction of each side left out of the fit: content enters and leaves there
CAMERA_LABELS = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "mixed")


class PairMotion(NamedTuple):
    """The flow between two frames, in frame widths per second (``zoom``: the flow the scale
    change makes at the mean distance from the centre)."""

    speed: float  # mean flow magnitude
    pan: float  # mean horizontal content velocity (tx), + = content moves right
    tilt: float  # mean vertical content velocity (ty), + = content moves down
    zoom: float  # + = content spreads out from the centre
    explained: float  # fraction of the flow energy the similarity model explains, 0-1


def flow_frames(frames: np.ndarray, size: int = FLOW_SIZE) -> np.ndarray:
    """uint8 gray [k, h', w'] of RGB frames [k, h, w, 3], resized (area) so the long side is ``size``."""
    _, h, w, _ = frames.shape
    scale = size / max(h, w)
    dims = (max(8, round(w * scale)), max(8, round(h * scale)))
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([cv2.resize(g, dims, interpolation=cv2.INTER_AREA) for g in gray])


def _warp_error(a: np.ndarray, b: np.ndarray, flow: np.ndarray) -> float:
    """Mean absolute difference between ``a`` and ``b`` pulled back along ``flow``, inside the margin."""
    h, w = a.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    pulled = cv2.remap(b, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, None, cv2.BORDER_REPLICATE)
    my, mx = int(h * _MARGIN), int(w * _MARGIN)
    diff = np.abs(a.astype(np.float32) - pulled.astype(np.float32))
    return float(diff[my : h - my, mx : w - mx].mean())


def dense_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 [h, w, 2] flow (dx, dy in px) from gray frame ``a`` to ``b``.

    OpenCV's Farneback pyramid stops at 32 px, so on 128x72 frames it follows about 8 px,
    while a moderate pan moves 16 px in the 0.5 s between sparse frames. So Farneback runs
    twice, from zero and from the global shift that phase correlation finds; the second is
    kept when it matches the frames clearly better (``_PHASE_GAIN``): on stripes and flat
    areas any shift along them matches as well, and phase correlation latches onto them.
    A second part moving fast another way stays beyond reach: its flow is wrong.
    """
    h, w = a.shape
    window = cv2.createHanningWindow((w, h), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(a.astype(np.float32), b.astype(np.float32), window)
    flows = []
    for shift in ((0.0, 0.0), (dx, dy)) if np.hypot(dx, dy) >= 1.0 else ((0.0, 0.0),):
        init = np.empty((h, w, 2), np.float32)
        init[...] = shift
        # pyramid scale 0.5, 3 levels, 15 px window, 3 iterations, 5 px polynomial (sigma 1.2)
        flow = cv2.calcOpticalFlowFarneback(a, b, init, 0.5, 3, 15, 3, 5, 1.2, cv2.OPTFLOW_USE_INITIAL_FLOW)
        flows.append(flow)
    if len(flows) == 2 and _warp_error(a, b, flows[1]) < _PHASE_GAIN * _warp_error(a, b, flows[0]):
        return flows[1]
    return flows[0]


def pair_motion(flow: np.ndarray, dt: float) -> PairMotion:
    """Mean speed and the similarity-model fit of one flow field.

    Args:
        flow: float [h, w, 2] displacement in px.
        dt: seconds between the two frames.
    """
    h, w, _ = flow.shape
    my, mx = int(h * _MARGIN), int(w * _MARGIN)
    f = flow[my : h - my, mx : w - mx].astype(np.float64)
    ys, xs = np.mgrid[my : h - my, mx : w - mx].astype(np.float64)
    x, y = xs - xs.mean(), ys - ys.mean()  # centred: the fit separates into closed forms
    u, v = f[..., 0], f[..., 1]
    tx, ty = u.mean(), v.mean()
    r2 = (x * x + y * y).sum()
    s = ((u - tx) * x + (v - ty) * y).sum() / r2
    rot = ((v - ty) * x - (u - tx) * y).sum() / r2
    res_u, res_v = u - (tx + s * x - rot * y), v - (ty + s * y + rot * x)
    energy = (u * u + v * v).sum()
    explained = 1.0 - (res_u * res_u + res_v * res_v).sum() / energy if energy > 0 else 1.0
    per_s = 1.0 / (flow.shape[1] * dt)  # px per pair -> frame widths per second
    speed = float(np.hypot(u, v).mean()) * per_s
    zoom = s * float(np.hypot(x, y).mean()) * per_s
    return PairMotion(speed, tx * per_s, ty * per_s, zoom, float(explained))


def clip_pairs(
    frames: np.ndarray, frame_idx: np.ndarray, fps: float, size: int = FLOW_SIZE
) -> list[PairMotion]:
    """Motion of each consecutive pair of ``frames`` (RGB [k, h, w, 3], source indices [k])."""
    gray = flow_frames(frames, size)
    dts = np.diff(frame_idx) / fps
    return [pair_motion(dense_flow(gray[i], gray[i + 1]), float(dts[i])) for i in range(len(gray) - 1)]


def with_fast_motion(
    pairs: list[PairMotion],
    frame_idx: np.ndarray,
    tiny: np.ndarray,
    tiny_start: int,
    fps: float,
    fast_motion: float = 0.5,
) -> list[PairMotion]:
    """``pairs``, each re-measured on two consecutive tiny frames where those move faster.

    Frames 0.5 s apart cannot follow a whip pan: past about 0.8 frame widths per second the
    two views barely overlap and the flow comes out near zero. Consecutive frames (1/fps
    apart) follow it easily, but at 48x27 they are too coarse for slow motion (a still shot
    reads up to 0.008, jittery detail mostly 0.1-0.3). So a pair takes the measurement of the tiny
    frames at its first frame and the next when that is at least ``fast_motion``.

    Args:
        pairs: from ``clip_pairs`` on frames at source indices ``frame_idx``.
        tiny: uint8 [n, h, w, 3], every frame of the clip; ``tiny[0]`` is frame ``tiny_start``.
    """
    out = []
    for pair, first in zip(pairs, frame_idx[:-1], strict=True):
        j = int(first) - tiny_start
        quick = pair_motion(dense_flow(*flow_frames(tiny[j : j + 2], max(tiny.shape[1:3]))), 1.0 / fps)
        out.append(quick if quick.speed >= fast_motion else pair)
    return out


def tiny_samples(
    tiny: np.ndarray, start_frame: int, fps: float, every_s: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """A clip's tiny frames about ``every_s`` apart (at least two when it has two), with their
    source frame indices: the flow input of a clip too short to hold two sparse frames.

    Args:
        tiny: uint8 [n, h, w, 3], every frame of the clip.
        start_frame: the source index of ``tiny[0]``.
    """
    n = len(tiny)
    step = max(1, min(n - 1, round(every_s * fps)))
    sel = np.arange(0, n, step)
    return np.asarray(tiny[sel]), start_frame + sel


def camera_label(
    pairs: list[PairMotion],
    static_motion: float = 0.005,
    min_explained: float = 0.5,
    min_share: float = 0.5,
) -> str:
    """One of CAMERA_LABELS from the medians over ``pairs`` (see the module docstring).

    Args:
        static_motion: median speed (frame widths/s) below which the camera is 'static'.
        min_explained: below this median explained fraction the motion is 'mixed'.
        min_share: the dominant of pan, tilt and zoom must be at least this share of the speed.
    """
    speed = float(np.median([p.speed for p in pairs]))
    if speed < static_motion:
        return "static"
    if float(np.median([p.explained for p in pairs])) < min_explained:
        return "mixed"
    pan, tilt, zoom = (float(np.median([getattr(p, c) for p in pairs])) for c in ("pan", "tilt", "zoom"))
    # (label when the content moves +, label when it moves -, median velocity): content moving
    # right / down / outwards means the camera pans left / tilts up / zooms in
    components = (
        ("pan_left", "pan_right", pan),
        ("tilt_up", "tilt_down", tilt),
        ("zoom_in", "zoom_out", zoom),
    )
    if_positive, if_negative, value = max(components, key=lambda c: abs(c[2]))
    if abs(value) < min_share * speed:
        return "mixed"
    return if_positive if value > 0 else if_negative

