"""Compression damage of a clip (``ClipScores`` ``artifacts``, ``blockiness``, ``bits_per_pixel``).

A no-reference score, 0 = clean ... 1 = severe, from what the single decode pass already
has (pipelines/decode.py): the compressed size of every frame's packet and, for each sparse
frame (about 2 fps), two edge profiles of the **full-resolution** luma plane in coded
orientation. Blocking lives on the codec's block grid (8x8 DCT blocks, 16x16 macroblocks,
4x4 and 2x2 vector-quantiser cells, anchored at the coded frame's top-left corner); it is
invisible once the frame is area-downscaled to 256x144, so it cannot be read from the
sparse frames.

Choices (measured values: table below, ``bench/artifacts_calibration.py``):

- *Edge profile* (``edge_profiles``): for each column gap x the mean over rows of
  min(|Y[:, x+1] - Y[:, x]|, ``STEP_CAP``) (and the same for row gaps). Capping at 16
  levels keeps a few strong natural edges (and the edge of a letterbox bar) from dominating.
- *Grid excess* (``grid_excess``): the profile is cut into blocks of ``period`` gaps; in
  each, b = the gap on the block boundary and i = the mean of the interior gaps. Blocking is
  a step at the boundary that the picture inside the block does not have:
  (b - i) / (i + ``VISIBILITY``), median over the blocks (a bar edge or a strong edge that
  happens to lie on the grid is one block of many). ``VISIBILITY`` (2 levels) makes a step
  in a flat area count in levels (a 1-level step is not visible) and one in texture count
  relative to the texture (texture masks it).
- *Blockiness* (``blockiness``): per grid period (2, 4, 8, 16) and direction the median over
  the clip's sparse frames, then the max over periods and directions. Period 16 is
  x264/x265's macroblock grid: at crf 45-51 their deblocking filter smooths the 4x4/8x8
  transform edges but 16x16 blocks still step (sintel 720p crf 45: 0.27 at period 16, 0.14
  at 8). Periods 2 and 4 catch the vector quantisers (Cinepak 2x2/4x4: 0.30 at period 2).
  An upscale of a blocky source by a non-integer factor moves its grid off ours and reads
  clean.
- *Bits per pixel* (``bits_per_pixel``): 8 x the clip's packet bytes / (frames x width x
  height). It depends on codec, resolution and content (a static or flat clip needs few
  bits: a flat 1080p motion-graphics card measured 0.002 with no damage at all), so on its own it is never a
  reason: it only *amplifies* blocking above the clean floor (``artifact_score``), by up to
  2x when the clip is starved (at or below ``STARVED_BPP``). Starvation is judged on the
  frames that show something new: a frame identical to the one before
  (``quality.identical_pairs``) rightly costs ~0 bytes, so a held frame is fed by its first
  frame's bits (the Sintel desert held 3 s at crf 18: 0.010 bpp over all frames, 0.31 over
  its 2 changing ones). The thresholds are set for deblocking codecs (H.264/HEVC/VP9); older
  codecs need more bits, but they do not hide their blocks, so the blockiness term catches
  them on its own.
- *Ringing* near edges is not measured: on the calibration set every clip with visible
  ringing (x264 crf >= 45, MPEG-2/4 at q 31) is already separated by blockiness and bits.

Calibration (``bench/artifacts_calibration.py``; bench/results/artifacts_calibration.json has
all 76 files and every clip): the dev-set videos and re-encodes of clean dev-set sources, 4 s
clips, medians over a file's clips and the max clip. Labels were given by eye (frames at
2-3x zoom): clean / fair (visibly compressed but usable) / damaged::

    file                                 label   codec      size      block    bpp artifacts   max
    sintel_trailer-720p.mp4              clean   h264       1280x720   0.02  0.044      0.00  0.00
    test_video.mp4                       clean   h264       960x540    0.06  0.078      0.00  0.01
    run.mp4                              clean   h264       720x400    0.02  0.094      0.00  0.00
    WolfgangLanger_Pexels.mp4            clean   h264       640x360    0.05  0.098      0.00  0.00
    minions.mp4                          clean   h264       800x450    0.04  0.040      0.00  0.00
    gradio/a.mp4 (flat motion graphics)  clean   h264       1920x1080  0.00  0.002      0.00  0.00
    cityCC0.mpg                          clean   mpeg2video 720x405    0.09  0.652      0.02  0.04
    no_face.mp4                          clean   h264       960x540    0.11  0.018      0.05  0.05
    display-dual-monitors.webm (screen)  clean   vp8        1024x768   0.11  0.009      0.07  0.35
    sintel frame held 4 s, crf 23        clean   h264       1280x720   0.07  0.004      0.00  0.00
    sintel crf 20                        clean   h264       1280x720   0.03  0.091      0.00  0.00
    sintel 176x144 crf 23                clean   h264       176x144    0.02  0.167      0.00  0.00
    Megamind.avi                         fair    mpeg4      720x528    0.09  0.072      0.02  0.03
    Megamind_bugy.avi                    fair    mpeg4      720x528    0.12  0.054      0.05  0.08
    cap13_edit2.mp4 (webcam)             fair    h264       400x300    0.18  0.052      0.13  0.18
    mpeg_alien.mpg                       fair    mpeg1video 320x240    0.22  0.260      0.19  0.47
    gstreamer_sample_sorenson.mov        fair    svq1       190x240    0.00  0.116      0.00  0.00
    sintel crf 35                        fair    h264       1280x720   0.09  0.018      0.01  0.02
    minions crf 35                       fair    h264       800x450    0.13  0.008      0.10  0.12
    WolfgangLanger MPEG-4 q 5            fair    mpeg4      640x360    0.52  0.138      0.61  0.62
    mov-basic.mov                        damaged svq1       192x144    0.19  0.517      0.15  0.18
    tree.avi                             damaged cinepak    320x240    0.30  1.893      0.31  0.34
    riff_flame.avi                       damaged indeo4     256x240    0.83  0.337      1.00  1.00
    minions crf 45                       damaged h264       800x450    0.19  0.004      0.24  0.25
    sintel crf 45                        damaged h264       1280x720   0.27  0.008      0.36  0.41
    WolfgangLanger crf 45                damaged h264       640x360    0.25  0.003      0.43  0.47
    test_video crf 51                    damaged h264       960x540    0.33  0.002      0.69  0.71
    sintel 176x144 crf 45                damaged h264       176x144    0.38  0.018      0.44  0.49
    run MPEG-2 q 31                      damaged mpeg2video 720x400    0.78  0.045      0.93  1.00
    WolfgangLanger MPEG-4 q 31           damaged mpeg4      640x360    1.66  0.026      1.00  1.00

Per clip: clean camera and CG footage reads at most 0.07 (the VP8 screen recording, a
starved gradient wallpaper, 0.13 and 0.35 on two of its ten clips); x264 crf >= 45 at any
size and MPEG-2/4 at q 31 at least 0.24 but for one clip (0.17, a 176x144 crf 45 copy); the
old vector-quantiser codecs lower (Cinepak 0.29-0.34, SVQ1 at 192x144 0.11 and 0.18).
``filters.max_artifacts`` = 0.15 sits between: it rejects every crushed re-encode, Cinepak
and Indeo, one of mov-basic's two clips, most MPEG-4 q 5 clips and the later clips of the
1999 MPEG-1 trailer, and 1 of the 150 clean clips (the screen recording's 0.35).
Megamind_bugy's defect is its timing (the same 270 frames at 30 fps instead of 23.976), not
its picture: it reads like Megamind.avi. The Sorenson sample is a mostly white graphic with
no blocks to see (and is 'overexposed' anyway).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

STEP_CAP = 16  # luma levels: neighbour differences are capped here before averaging
VISIBILITY = 2.0  # luma levels added to the interior gradient (a 1-level step is invisible)
PERIODS = (2, 4, 8, 16)  # block grids measured, in pixels
MIN_BLOCKS = 8  # a grid is measured along a direction only with this many whole blocks
CLEAN_BLOCKINESS = 0.08  # at or below: reads 0 (clean real footage measured 0.00-0.11)
SEVERE_BLOCKINESS = 0.8  # at or above (after amplification): reads 1 (Indeo 4: 0.83)
CLEAN_BPP = 0.02  # bits per pixel at or above which bits do not amplify blocking
STARVED_BPP = 0.002  # ... at or below which they double it (log scale in between)


def edge_profiles(y: np.ndarray, cap: int = STEP_CAP) -> tuple[np.ndarray, np.ndarray]:
    """Capped neighbour differences of one luma plane, averaged along each line.

    Args:
        y: uint8 luma [H, W] at the coded resolution.
        cap: differences are capped at this many levels.

    Returns:
        (float32 [W-1]: mean over rows of min(|y[:, x+1] - y[:, x]|, cap) for each column
        gap x, float32 [H-1]: the same over columns for each row gap).
    """
    y = np.ascontiguousarray(y)
    dx = cv2.min(cv2.absdiff(y[:, 1:], y[:, :-1]), cap)
    dy = cv2.min(cv2.absdiff(y[1:, :], y[:-1, :]), cap)
    cols = cv2.reduce(dx, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() / max(1, dx.shape[0])
    rows = cv2.reduce(dy, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() / max(1, dy.shape[1])
    return cols.astype(np.float32), rows.astype(np.float32)


def grid_excess(
    profile: np.ndarray, period: int, visibility: float = VISIBILITY, min_blocks: int = MIN_BLOCKS
) -> float | None:
    """Median over blocks of (boundary gap - interior mean) / (interior mean + visibility).

    Args:
        profile: float [L], one direction's edge profile (``edge_profiles``); gap g lies
            between pixels g and g+1, so gap ``period - 1`` of each block is the boundary.
        period: the block size in pixels.
        min_blocks: fewer whole blocks than this give None: a median of a handful of blocks
            reads a sharp test pattern's edges as blocking (testsrc2 at 97x55: 0.30 from 6
            blocks of 16 px).

    Returns:
        0 for a clean picture, about 0.2-0.4 for x264 crf 45-51 at period 16, above 1 for
        MPEG-4 part 2 at q 31 at period 8; None when the profile is too short.
    """
    n = len(profile) // period
    if n < max(1, min_blocks):
        return None
    blocks = np.asarray(profile[: n * period], np.float64).reshape(n, period)
    boundary, interior = blocks[:, -1], blocks[:, :-1].mean(axis=1)
    return float(np.median((boundary - interior) / (interior + visibility)))


def blockiness(
    cols: np.ndarray,
    rows: np.ndarray,
    periods: tuple[int, ...] = PERIODS,
    visibility: float = VISIBILITY,
) -> float | None:
    """A clip's blocking: max over periods and directions of the median over frames of
    ``grid_excess``.

    Args:
        cols: float [k, W-1] column-gap profiles of the clip's sparse frames (NaN rows:
            frames that were not measured, e.g. after a mid-stream size change).
        rows: float [k, H-1] row-gap profiles of the same frames.

    Returns:
        The blockiness (0 = none; can be slightly negative for very smooth pictures), or
        None when no frame was measured or the frame is too small for any grid.
    """
    measured = ~(np.isnan(cols).any(axis=1) | np.isnan(rows).any(axis=1)) if len(cols) else []
    if not np.any(measured):
        return None
    cols, rows = cols[measured], rows[measured]
    per_grid = []
    for period in periods:
        for profiles in (cols, rows):
            values = [v for v in (grid_excess(p, period, visibility) for p in profiles) if v is not None]
            if values:  # the frame is long enough along this direction for this grid
                per_grid.append(float(np.median(values)))
    return max(per_grid) if per_grid else None


def bits_per_pixel(packet_bytes: np.ndarray, width: int, height: int) -> float | None:
    """8 x the summed packet bytes / (frames x width x height); None without frames."""
    if len(packet_bytes) == 0 or width <= 0 or height <= 0:
        return None
    return 8.0 * float(np.sum(packet_bytes)) / (len(packet_bytes) * width * height)


def starvation(bpp: float | None, clean_bpp: float = CLEAN_BPP, starved_bpp: float = STARVED_BPP) -> float:
    """0 at or above ``clean_bpp`` ... 1 at or below ``starved_bpp``, linear in log(bpp)."""
    if bpp is None:
        return 0.0
    if bpp <= starved_bpp:
        return 1.0
    return float(np.clip(math.log(clean_bpp / bpp) / math.log(clean_bpp / starved_bpp), 0.0, 1.0))


def artifact_score(
    block: float | None,
    bpp: float | None,
    clean: float = CLEAN_BLOCKINESS,
    severe: float = SEVERE_BLOCKINESS,
    clean_bpp: float = CLEAN_BPP,
    starved_bpp: float = STARVED_BPP,
) -> float | None:
    """Compression damage, 0 (clean) ... 1 (severe).

    The blocking above the clean floor, amplified by up to 2x when the clip is starved of
    bits, on a linear scale from ``clean`` to ``severe``::

        excess    = max(0, block - clean) * (1 + starvation(bpp))
        artifacts = clip(excess / (severe - clean), 0, 1)

    A clip without blocking reads 0 however few bits it has (a static or flat clip).

    Args:
        block: ``blockiness``; None (not measured) gives None.
        bpp: bits per pixel of the clip's changing frames (``bits_per_pixel`` over the frames
            that differ from the one before); None counts as not starved.
    """
    if block is None:
        return None
    excess = max(0.0, block - clean) * (1.0 + starvation(bpp, clean_bpp, starved_bpp))
    return float(np.clip(excess / (severe - clean), 0.0, 1.0))
