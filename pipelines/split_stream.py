"""Shot detection that works while the video is still decoding.

``decode_video(..., on_tiny=stream.feed)`` hands ``StreamedSplit`` each chunk of tiny frames as
it is decoded. A worker thread then does, on the frames so far, what does not need the rest of
the video:

- the per-frame signals (frame difference, colour histograms), exactly as the whole-video
  functions compute them (each value depends on its frame and the one before);
- the cascade's proposals on the decoded prefix, and the TransNetV2 windows they ask for, when
  a window's frames are all decoded and it lies ``MARGIN`` frames clear of the prefix's end.

``finish(frames)`` then runs ``detect_transitions`` on the whole video, unchanged: the windows
it asks for that the worker already ran come from the cache (a window's output depends only on
its frames), the others run then. So the transitions are the ones ``detect_transitions`` gives
without streaming, by construction; streaming only moves work into the decode's time. A window
the worker ran that the final plan does not ask for is wasted work, nothing else.

The decode keeps FFmpeg's threads busy and the worker runs the model on one torch thread: on a
2-core machine the two overlap instead of running one after the other.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from pipelines import shot_detect as sd
from pipelines.shot_transitions import cascade_plan
from pipelines.transnet import CONTEXT, fixed_windows

CHUNK = 64  # decoded frames between two passes of the worker (the decoder's tiny chunk)
MARGIN = 64  # frames at a prefix's end (and before a pass's first range) whose proposals may change


class StreamedSplit:
    """Speculative TransNetV2 windows and exact per-frame signals for one video, while it decodes."""

    def __init__(
        self, model: Any, cascade_context: int = 6, gradual_context: int = 16, black_luma: float = 20.0
    ) -> None:
        self.model = model
        # hard-cut and gradual proposal windows' contexts, the black frames' luma (cascade_plan)
        self.plan_args = (cascade_context, gradual_context, black_luma)
        self._buf = np.empty((0, 27, 48, 3), np.uint8)
        self.n = 0
        self._diff = np.zeros(0, np.float32)
        self._hist = np.zeros((0, 3 * sd.HIST_BINS), np.float32)
        self._signals_to = 0  # frames whose diff and histogram are computed
        self._proposed_to = 0  # ranges starting before this were looked at by a pass
        self._cache: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._stop = threading.Event()  # set by finish(): a pass ends after its current window
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vidloom-split")
        self._pending: Future[None] | None = None
        self.speculated = 0  # windows run while decoding

    # --- while decoding ---------------------------------------------------------------------
    def feed(self, chunk: np.ndarray) -> None:
        """Append decoded tiny frames; start a worker pass when enough new frames arrived."""
        if self.n + len(chunk) > len(self._buf):  # grow by doubling; old views stay valid
            grown = np.empty((max(2 * len(self._buf), self.n + len(chunk), 1024), *chunk.shape[1:]), np.uint8)
            grown[: self.n] = self._buf[: self.n]
            self._buf = grown
        self._buf[self.n : self.n + len(chunk)] = chunk
        self.n += len(chunk)
        idle = self._pending is None or self._pending.done()
        if idle and self.n - max(self._proposed_to, MARGIN) >= CHUNK:
            if self._pending is not None:
                self._pending.result()  # re-raise a worker error here, not later
            self._pending = self._pool.submit(self._pass, self._buf[: self.n])

    def _pass(self, frames: np.ndarray) -> None:
        diff, hist = self._signals(frames)
        n = len(frames)
        lo = max(0, self._proposed_to - 3 * MARGIN)  # proposals need this much history
        seg = frames[lo:]
        _, plan = cascade_plan(seg, diff[lo:], hist[lo:], *self.plan_args)
        # ranges that started in the last pass but ran past its end come back in this one
        first, last = (0 if self._proposed_to == 0 else self._proposed_to - 2 * MARGIN), n - MARGIN
        for ranges, c, u in plan:
            mine = [(a + lo, b + lo) for a, b in ranges if first <= a + lo and b + lo <= last]
            for s, k, _, _ in fixed_windows(mine, n, u):
                if self._stop.is_set():
                    return
                if s + k + c <= last and (s, k, c) not in self._cache:
                    self._cache[(s, k, c)] = self.model.window(frames, s, k, c)
                    self.speculated += 1
        self._proposed_to = last

    def _signals(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """diff and histograms of every frame so far, computed for the new frames only."""
        n, s = len(frames), self._signals_to
        if n > s:
            d = sd.frame_diff(frames[max(0, s - 1) : n])
            self._diff = np.concatenate([self._diff, d[1:] if s else d])
            self._hist = np.concatenate([self._hist, sd.color_histograms(frames[s:n])])
            self._signals_to = n
        return self._diff, self._hist

    # --- once decoded -----------------------------------------------------------------------
    def finish(self, frames: np.ndarray, workers: int = 1) -> tuple[Any, np.ndarray, np.ndarray]:
        """Stop the worker after its current window; return (a model whose windows come from the
        cache, the others computed ``workers`` at once: the decode's cores are free by now, diff,
        histograms) for ``detect_transitions`` over all ``frames``."""
        self._stop.set()
        if self._pending is not None:
            self._pending.result()
        self._pool.shutdown(wait=True)
        if self.n != len(frames) or (self.n and not np.array_equal(self._buf[: self.n], frames)):
            self._cache.clear()  # not the frames that were fed (a resumed decode feeds none)
            self._signals_to, self._diff, self._hist = 0, self._diff[:0], self._hist[:0]
        diff, hist = self._signals(frames)
        return _CachedWindows(self.model, self._cache, workers), diff, hist

    def close(self) -> None:
        """Stop the worker after its current window (a failed decode does not wait for a whole
        pass); safe to call twice."""
        self._stop.set()
        self._pool.shutdown(wait=True)


class _CachedWindows:
    """A TransNet whose ``predict`` takes each window from the cache when it is there."""

    def __init__(self, model: Any, cache: dict[tuple[int, int, int], Any], workers: int) -> None:
        self.model, self.cache, self.workers = model, cache, workers

    def _window(self, frames: np.ndarray, s: int, k: int, c: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self.cache.pop((s, k, c), None)  # dict.pop is atomic: safe from predict's threads
        return hit if hit is not None else self.model.window(frames, s, k, c)

    def predict(
        self, frames: np.ndarray, ranges: Any = None, context: int = CONTEXT, useful: int | None = None
    ) -> Any:
        return self.model.predict(frames, ranges, context, window=self._window, useful=useful,
                                  workers=self.workers)


def decode_and_detect(
    path: str,
    out_dir: str,
    model: Any,
    *,
    detector: str = "transnetv2",
    threshold: float = 0.5,
    flash_max_frames: int = 8,
    black_luma: float = 20.0,
    cascade_context: int = 6,
    gradual_context: int = 16,
    fps: float | None = None,
    workers: int = 1,
    **decode_args: Any,
) -> tuple[Any, list[sd.Transition]]:
    """``decode_video(path, out_dir, **decode_args)`` and the video's transitions, the cascade's
    model windows running while the decode goes on. Returns (DecodeResult, transitions); the
    transitions are ``detect_transitions``' on the decoded frames. ``fps`` None: from the frames'
    timestamps. ``workers``: threads for the windows left once the decode is done (the cores the
    decode used). Raises what ``decode_video`` raises."""
    from pipelines.decode import decode_video, load_timeline, load_tiny
    from pipelines.shot_transitions import detect_transitions

    cascade = detector == "transnetv2" and model is not None
    stream = StreamedSplit(model, cascade_context, gradual_context, black_luma) if cascade else None
    # one torch thread per window while the decode runs beside them; the windows left after it run
    # on the caller's threads again (``workers`` at once): the sequential runner's split took 40.5 s
    # so (bench/results/curate_real_split_sequential.json) and 46.2 s with one thread each in a run
    # just before (not stored): a kind's last window runs alone. Ray workers have one thread anyway.
    threads = _torch_threads(1 if stream else None)
    try:
        res = decode_video(path, out_dir, on_tiny=stream.feed if stream else None, **decode_args)
        frames = np.asarray(load_tiny(res.frames))
        m, diff, hist = stream.finish(frames, workers) if stream else (model, None, None)
    finally:
        if stream:
            stream.close()
        _torch_threads(threads)
    if fps is None:
        pts, _ = load_timeline(res.frames)
        fps = (len(pts) - 1) / (pts[-1] - pts[0]) if len(pts) > 1 and pts[-1] > pts[0] else 25.0
    trs, _ = detect_transitions(frames, detector, m, threshold, flash_max_frames, black_luma, fps,
                                cascade_context, gradual_context=gradual_context, diff=diff, hist=hist)
    return res, trs


def _torch_threads(n: int | None) -> int | None:
    """Set torch's intra-op threads to ``n`` (None: leave them); return the previous count."""
    if n is None:
        return None
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    return before
