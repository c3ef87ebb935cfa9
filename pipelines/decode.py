"""The single decode pass (docs/architecture.md "Decode once").

A video is decoded once, streaming, with PyAV frame threading; FFmpeg's filter
graphs downscale each frame (``scale=...:flags=area`` to rgb24, display rotation
applied after the downscale, on the small frame) into:

- a 48x27 "tiny" frame for every frame (the shot detector's input);
- a sparse frame fitted into ``sparse_size`` (aspect kept, even sides) for frames
  chosen in Python by timestamp at about ``sparse_fps`` (VFR-safe);
- for those same sparse frames, the edge profiles of the full-resolution luma plane
  (``artifacts.edge_profiles``: blocking sits on the codec's block grid and is gone after
  the downscale), and for every frame the bytes of its compressed packet (pipelines/artifacts.py).
  The packets are demuxed here anyway; a profile costs ~5 ms on a 1080p frame, 2 a second:
  about 7% of the pass on a 1080p30 file (gradio/a.mp4 of the dev set: 0.07 of 0.98 s).

Two graphs, not one ``split`` graph: the tiny graph sees every frame, the sparse
graph only the chosen ones. A ``split`` graph scales *every* frame to the sparse
size too. Measured on 720p30 h264, 2 cores (wall fps): decode alone ~480, + tiny
scale ~430; tiny + sparse with ``split`` ~340, two graphs both fed every frame
~335, sparse graph on chosen frames only ~425 (= the decode + tiny-scale limit,
``decode_only_fps``), ``VideoFrame.reformat`` ~270.

Outputs stream into ``.npy`` files in a temporary directory (one chunk of frames
in memory), which is then renamed into place; a complete directory made with the
same parameters is reused as is (resume).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.artifacts import edge_profiles
from pipelines.frame_scaler import Scaler, coded_luma

# the readers of what this module writes, importable from here as before
from pipelines.frameset_io import load_sparse, load_timeline, load_tiny, presentation_times  # noqa: F401
from pipelines.npy_stream import CHUNK_FRAMES, NpyWriter
from pipelines.tasks import FrameSet

if TYPE_CHECKING:
    from av.video.frame import VideoFrame

TINY_SIZE = (48, 27)  # (width, height)
FORMAT_VERSION = 2  # bump when the artifacts change meaning (2: packet bytes, edge profiles)
META_FILE = "meta.json"  # written last: its presence (after the rename) means complete
ARTIFACTS = (
    "tiny.npy", "pts.npy", "keyframe.npy", "sparse.npy", "sparse_idx.npy",
    "packet_bytes.npy", "edge_cols.npy", "edge_rows.npy", META_FILE,
)
_SHORTFALL_S = 0.5  # decoded span this much shorter than the header says => truncated


class DecodeError(RuntimeError):
    """The file yielded no frames at all."""


@dataclass(slots=True)
class DecodeResult:
    """A FrameSet plus how the decode went.

    Attributes:
        frames: the artifacts on disk.
        truncated: decoding stopped early (corrupt or cut file); the frames up to
            there are kept.
        warning: a readable explanation when ``truncated``.
        resumed: the artifacts already existed and nothing was decoded.
    """

    frames: FrameSet
    truncated: bool = False
    warning: str | None = None
    resumed: bool = False


def sparse_dims(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    """Largest (w, h) with even sides that fits in ``box`` keeping width:height (rounded down)."""
    scale = min(box[0] / width, box[1] / height)
    w, h = (max(2, int(round(side * scale, 6)) // 2 * 2) for side in (width, height))
    return w, h


class SparseClock:
    """Picks about ``fps`` frames a second by timestamp: a frame is taken when its
    time reaches the next sample time t0 + k/fps; gaps skip sample times."""

    def __init__(self, fps: float) -> None:
        self.step = 1.0 / fps
        self.t0: float | None = None
        self.k = 0

    def take(self, t: float) -> bool:
        if self.t0 is None:
            self.t0 = t
        if t < self.t0 + self.k * self.step - 1e-6:
            return False
        self.k = int((t - self.t0) / self.step + 1e-6) + 1
        return True


def _load_complete(out_dir: str, params: dict[str, Any]) -> DecodeResult | None:
    """The finished result in ``out_dir`` if it was made with ``params``, else None."""
    if not all(os.path.exists(os.path.join(out_dir, name)) for name in ARTIFACTS):
        return None
    try:
        with open(os.path.join(out_dir, META_FILE)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if meta.get("params") != params:
        return None
    w, h = meta["sparse_size"]
    frames = FrameSet(dir=os.path.abspath(out_dir), n_frames=meta["n_frames"], sparse_size=(w, h))
    return DecodeResult(frames, truncated=meta["truncated"], warning=meta["warning"], resumed=True)


def decode_video(
    path: str,
    out_dir: str,
    sparse_fps: float = 2.0,
    sparse_size: tuple[int, int] = (256, 144),
    threads: int = 0,
    on_tiny: Callable[[np.ndarray], None] | None = None,
) -> DecodeResult:
    """Decode ``path`` once into the FrameSet files in ``out_dir`` (see ``FrameSet``).

    Resumable: a complete ``out_dir`` made with the same parameters is returned as
    is. A file that breaks midway keeps the frames decoded so far
    (``truncated=True``).

    Args:
        path: the video file.
        out_dir: the FrameSet directory; written atomically (temp dir + rename).
        sparse_fps: sparse frames per second of video (chosen by timestamp).
        sparse_size: (width, height) box the sparse frames are fitted into.
        threads: decoder threads; 0 lets FFmpeg choose.
        on_tiny: called with every chunk of tiny frames as it is decoded, in order (a consumer
            that works while the decode goes on: pipelines/split_stream.py). Not called when
            the artifacts already exist.

    Raises:
        DecodeError: the file cannot be opened, has no video stream, or yields no frame.
    """
    params = {
        "version": FORMAT_VERSION,
        "tiny_size": list(TINY_SIZE),
        "sparse_fps": sparse_fps,
        "sparse_box": list(sparse_size),
    }
    if (done := _load_complete(out_dir, params)) is not None:
        return done
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the published dir should not be
    try:
        meta = _decode_into(path, tmp, sparse_fps, sparse_size, threads, on_tiny)
        meta["params"] = params
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, sort_keys=True)
        _publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    done = _load_complete(out_dir, params)
    if done is None:  # lost a race to a writer with other parameters
        raise DecodeError(f"{out_dir} was replaced while decoding {path}")
    done.resumed = False
    return done


def _publish(tmp: str, out_dir: str) -> None:
    """Rename ``tmp`` to ``out_dir``, replacing a stale or incomplete ``out_dir``."""
    if os.path.exists(out_dir):
        stale = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(tmp))
        os.rename(out_dir, os.path.join(stale, "old"))
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if not os.path.isdir(out_dir):  # else a concurrent worker published first: keep theirs
            raise


class _Outputs:
    """The FrameSet files of one decode. The first frame fixes rotation and sparse size."""

    def __init__(
        self, out: str, first: VideoFrame, sparse_box: tuple[int, int],
        on_tiny: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        self.out = out
        self.rotation = round(first.rotation / 90) * 90 % 360
        shown = (first.height, first.width) if self.rotation % 180 else (first.width, first.height)
        self.sparse_size = sparse_dims(*shown, sparse_box)
        # a consumer of the tiny frames gets them 64 at a time: it starts on them sooner
        self.tiny = NpyWriter(os.path.join(out, "tiny.npy"), (TINY_SIZE[1], TINY_SIZE[0], 3), np.uint8,
                               chunk=64 if on_tiny else CHUNK_FRAMES, on_chunk=on_tiny)
        w, h = self.sparse_size
        self.sparse = NpyWriter(os.path.join(out, "sparse.npy"), (h, w, 3), np.uint8, chunk=16)
        self.coded = (first.width, first.height)  # edge profiles have this frame size's lengths
        cw, ch = max(0, first.width - 1), max(0, first.height - 1)
        self.edge_cols = NpyWriter(os.path.join(out, "edge_cols.npy"), (cw,), np.float32, chunk=16)
        self.edge_rows = NpyWriter(os.path.join(out, "edge_rows.npy"), (ch,), np.float32, chunk=16)
        self.pts: list[float] = []
        self.keyframe: list[bool] = []
        self.sparse_idx: list[int] = []
        self.packet_bytes: list[int] = []
        self._scalers = self._make_scalers(first)

    def _make_scalers(self, frame: VideoFrame) -> tuple[Scaler, Scaler]:
        return Scaler(frame, TINY_SIZE, self.rotation), Scaler(frame, self.sparse_size, self.rotation)

    def add(self, frame: VideoFrame, t: float, sampled: bool, packet_bytes: int) -> None:
        if self._scalers[0].key != (frame.width, frame.height, frame.format.name):  # mid-stream change
            self._scalers = self._make_scalers(frame)
        tiny_scaler, sparse_scaler = self._scalers
        if sampled:
            self.sparse_idx.append(len(self.pts))
            self.sparse.append(sparse_scaler(frame))
            self._add_edges(frame)
        self.tiny.append(tiny_scaler(frame))
        self.pts.append(t)
        self.keyframe.append(bool(frame.key_frame))
        self.packet_bytes.append(packet_bytes)

    def _add_edges(self, frame: VideoFrame) -> None:
        if (frame.width, frame.height) == self.coded:
            cols, rows = edge_profiles(coded_luma(frame))
        else:  # after a mid-stream size change the profiles do not fit: not measured
            cols, rows = (np.full(n - 1, np.nan, np.float32) for n in self.coded)
        self.edge_cols.append(cols)
        self.edge_rows.append(rows)

    def close(self) -> None:
        self.tiny.close()
        self.sparse.close()
        self.edge_cols.close()
        self.edge_rows.close()
        np.save(os.path.join(self.out, "packet_bytes.npy"), np.asarray(self.packet_bytes, dtype=np.int64))
        np.save(os.path.join(self.out, "pts.npy"), presentation_times(self.pts))
        np.save(os.path.join(self.out, "keyframe.npy"), np.asarray(self.keyframe, dtype=bool))
        np.save(os.path.join(self.out, "sparse_idx.npy"), np.asarray(self.sparse_idx, dtype=np.int64))


def _decode_into(
    path: str, out: str, sparse_fps: float, sparse_box: tuple[int, int], threads: int,
    on_tiny: Callable[[np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Decode into the (temporary) directory ``out``; return the metadata to record."""
    import av

    from pipelines.remote import av_open

    try:
        container = av_open(path)  # a URL is streamed through fsspec (pipelines/remote.py)
    except (av.FFmpegError, OSError) as e:
        raise DecodeError(f"cannot open: {getattr(e, 'strerror', None) or e}") from e
    with container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: about +50%
        stream.codec_context.thread_count = threads
        # Times count from the file's start, as ``ffmpeg -ss`` does.
        start_s = container.start_time / 1_000_000 if container.start_time is not None else 0.0
        rate = stream.average_rate or stream.guessed_rate
        frame_s = 1.0 / float(rate) if rate else 1.0 / 30
        outputs: _Outputs | None = None
        clock = SparseClock(sparse_fps)
        t = -frame_s
        error: str | None = None
        # Packet bytes waiting for their frame, in decode order, by pts: frames leave the
        # decoder in presentation order. A frame whose pts matches none takes the oldest.
        waiting: dict[Any, int] = {}
        n_packets = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    waiting[packet.pts if packet.pts is not None else ("no pts", n_packets)] = packet.size
                    n_packets += 1
                for frame in packet.decode():
                    nbytes = waiting.pop(frame.pts, None)
                    if nbytes is None and waiting:
                        nbytes = waiting.pop(next(iter(waiting)))
                    outputs = outputs or _Outputs(out, frame, sparse_box, on_tiny)
                    t = frame.time - start_s if frame.time is not None else t + frame_s
                    outputs.add(frame, t, clock.take(t), nbytes or 0)
        except (av.FFmpegError, OSError) as e:
            n = len(outputs.pts) if outputs else 0
            error = f"decode stopped after {n} frames: {getattr(e, 'strerror', None) or e}"
        if outputs is None:
            raise DecodeError(f"no frames decoded ({error})" if error else "no frames decoded")
        outputs.close()
        n = len(outputs.pts)
        error = error or _shortfall(stream, container, t + frame_s, n, frame_s)
    return {
        "n_frames": n,
        "n_sparse": len(outputs.sparse_idx),
        "sparse_size": list(outputs.sparse_size),
        "truncated": error is not None,
        "warning": error,
    }


def _shortfall(stream: Any, container: Any, end_s: float, n: int, frame_s: float) -> str | None:
    """A warning when the header promised clearly more than was decoded (silently cut files)."""
    if stream.frames and (stream.frames - n) * frame_s > _SHORTFALL_S:
        return f"decoded {n} of {stream.frames} frames the container lists"
    expected = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    if expected is None and container.duration:
        expected = container.duration / 1_000_000
    if expected is not None and expected - end_s > _SHORTFALL_S:
        return f"decoded {end_s:.2f} s of the {expected:.2f} s the container lists"
    return None


def decode_only_fps(path: str, threads: int = 0) -> float:
    """Frames per second of decode + the tiny downscale alone, with no outputs.

    The "decode-only limit" baseline for ``decode_video``'s throughput.
    """
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        scaler: Scaler | None = None
        n = 0
        t0 = time.perf_counter()
        for frame in container.decode(stream):
            if scaler is None:
                scaler = Scaler(frame, TINY_SIZE, round(frame.rotation / 90) * 90 % 360)
            scaler.scale(frame)
            n += 1
        return n / (time.perf_counter() - t0)
