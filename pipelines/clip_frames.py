"""A clip's frames from the single decode pass: what every scorer reads instead of decoding.

The decode pass (pipelines/decode.py) left, per video, every frame at 48x27 (``tiny.npy``) and
about 2 fps at up to 256x144 (``sparse.npy`` + ``sparse_idx.npy``). A clip is the frame span
[start_frame, end_frame) of its video; these functions slice that span out of the memory-mapped
arrays, so a scorer touches only its clip's frames. The compression measures read the
per-frame packet bytes and the sparse frames' full-resolution edge profiles the same way.
"""

from __future__ import annotations

import os

import numpy as np

from pipelines.tasks import ClipTask


def _require(task: ClipTask) -> str:
    if not task.frames_dir or not os.path.isdir(task.frames_dir):
        raise FileNotFoundError(f"clip {task.clip.clip_id}: no decoded frames at {task.frames_dir!r}")
    return task.frames_dir


def clip_tiny(task: ClipTask) -> np.ndarray:
    """uint8 [n, 27, 48, 3] RGB: every frame of the clip (a read-only memory map slice)."""
    tiny = np.load(os.path.join(_require(task), "tiny.npy"), mmap_mode="r")
    return tiny[task.clip.start_frame : task.clip.end_frame]


def clip_sparse(task: ClipTask, every_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The clip's sparse frames: (uint8 [k, h, w, 3] RGB, int64 [k] source frame index).

    Args:
        every_s: thin the samples to about one per ``every_s`` seconds of the clip (by frame
            index and the clip's fps); None keeps them all. At least one frame is returned when
            the span holds any sparse frame.
    """
    d = _require(task)
    idx = np.load(os.path.join(d, "sparse_idx.npy"))
    c = task.clip
    sel = np.flatnonzero((idx >= c.start_frame) & (idx < c.end_frame))
    if every_s and len(sel) > 1:
        step = max(1, round(every_s * c.fps))
        picked, next_frame = [], -1
        for i in sel:
            if idx[i] >= next_frame:
                picked.append(i)
                next_frame = idx[i] + step
        sel = np.asarray(picked, dtype=np.int64)
    sparse = np.load(os.path.join(d, "sparse.npy"), mmap_mode="r")
    return np.asarray(sparse[sel]), idx[sel]


def clip_packet_bytes(task: ClipTask) -> np.ndarray:
    """int64 [n]: the compressed packet bytes of every frame of the clip (decode format >= 2)."""
    packets = np.load(os.path.join(_require(task), "packet_bytes.npy"), mmap_mode="r")
    return np.asarray(packets[task.clip.start_frame : task.clip.end_frame])


def clip_edges(task: ClipTask) -> tuple[np.ndarray, np.ndarray]:
    """The full-resolution edge profiles of the clip's sparse frames (``artifacts.edge_profiles``):
    (float32 [k, W-1] column gaps, float32 [k, H-1] row gaps), in coded orientation."""
    d = _require(task)
    idx = np.load(os.path.join(d, "sparse_idx.npy"))
    sel = np.flatnonzero((idx >= task.clip.start_frame) & (idx < task.clip.end_frame))
    cols, rows = (np.load(os.path.join(d, f"edge_{n}.npy"), mmap_mode="r") for n in ("cols", "rows"))
    return np.asarray(cols[sel]), np.asarray(rows[sel])


def luma(rgb: np.ndarray) -> np.ndarray:
    """float32 BT.601 luma (0-255) of uint8 RGB [..., 3]."""
    x = rgb.astype(np.float32)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
