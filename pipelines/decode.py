"""The single decode pass (DESIGN.md "Decode once").

A video is decoded once, streaming, with PyAV frame threading. Each decoded frame
is downscaled inside FFmpeg (libavfilter, ``scale=...:flags=area`` to rgb24) into:

- a 48x27 "tiny" frame, for every frame (the shot detector's input);
- a sparse frame at ``sparse_size`` (fit inside, aspect kept, even sides), for
  frames chosen in Python by timestamp at about ``sparse_fps`` (VFR-safe).

Two graphs, not one ``split`` graph: the tiny graph sees every frame, the sparse
graph only the chosen ones. A ``split`` graph must scale *every* frame to the
sparse size too, and on 720p that was the slowest variant we measured (see
``bench/`` numbers in the ingest/decode report); scaling a few frames a second
on demand costs nothing measurable. Rotation (display matrix) is applied after the
downscale, on the small frames, so it is nearly free.

Outputs are streamed to ``.npy`` files in a temporary directory (never holding
more than one chunk of frames), then the directory is renamed into place; an
existing complete directory with the same parameters is reused (resume).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.tasks import FrameSet

if TYPE_CHECKING:
    import av.filter
    from av.video.frame import VideoFrame

TINY_SIZE = (48, 27)  # (width, height)
FORMAT_VERSION = 1  # bump when the artifacts change meaning
META_FILE = "meta.json"
_HEADER_BYTES = 128  # fixed .npy header size, so the shape can be written last
_CHUNK_FRAMES = 256  # frames buffered in memory before a write
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
    """Largest (w, h) with even sides that fits in ``box`` keeping width:height."""
    scale = min(box[0] / width, box[1] / height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def rotation_filters(rotation: int) -> list[tuple[str, str | None]]:
    """Filters that turn a coded frame into display orientation.

    Args:
        rotation: counter-clockwise degrees of the display matrix (PyAV's
            ``VideoFrame.rotation``), a multiple of 90.
    """
    return {90: [("transpose", "cclock")], 180: [("hflip", None), ("vflip", None)],
            270: [("transpose", "clock")]}.get(rotation % 360, [])


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


class _NpyWriter:
    """Appends equally shaped items to a ``.npy`` file, one chunk in memory at a time."""

    def __init__(self, path: str, item_shape: tuple[int, ...], dtype: Any, chunk: int = _CHUNK_FRAMES):
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(b"\0" * _HEADER_BYTES)  # the real header goes here once n is known
        self._buf = np.empty((chunk, *item_shape), dtype=dtype)
        self._used = 0
        self.n = 0

    def append(self, item: np.ndarray) -> None:
        self._buf[self._used] = item
        self._used += 1
        self.n += 1
        if self._used == len(self._buf):
            self._flush()

    def _flush(self) -> None:
        self._f.write(self._buf[: self._used].tobytes())
        self._used = 0

    def close(self) -> None:
        self._flush()
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {
            "descr": np.lib.format.dtype_to_descr(self._buf.dtype), "fortran_order": False,
            "shape": (self.n, *self._buf.shape[1:])})
        if len(header.getvalue()) != _HEADER_BYTES:  # only for absurd shapes
            raise ValueError(f".npy header for shape {(self.n, *self._buf.shape[1:])} is not {_HEADER_BYTES} B")
        self._f.seek(0)
        self._f.write(header.getvalue())
        self._f.close()


class _Scaler:
    """One filter graph: buffer -> scale (area) -> [rotate] -> rgb24 -> sink, for one input geometry."""

    def __init__(self, frame: VideoFrame, size: tuple[int, int], rotation: int) -> None:
        import av.filter

        w, h = size if rotation % 180 == 0 else size[::-1]  # scale first, rotate the small frame
        self.key = (frame.width, frame.height, frame.format.name)
        self.graph = av.filter.Graph()  # must outlive its contexts: keep the reference
        src = self.graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                    time_base=frame.time_base or Fraction(1, 90000))
        chain = [("scale", f"{w}:{h}:flags=area"), *rotation_filters(rotation), ("format", "rgb24")]
        nodes: list[av.filter.FilterContext] = [src, *(self.graph.add(n, a) for n, a in chain)]
        self._sink = self.graph.add("buffersink")
        self.graph.link_nodes(*nodes, self._sink)
        self.graph.configure()
        self._src = src

    def scale(self, frame: VideoFrame) -> VideoFrame:
        self._src.push(frame)
        return self._sink.pull()  # type: ignore[return-value]

    def __call__(self, frame: VideoFrame) -> np.ndarray:
        return self.scale(frame).to_ndarray()


def _params(sparse_fps: float, sparse_size: tuple[int, int]) -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "tiny_size": list(TINY_SIZE), "sparse_fps": sparse_fps,
            "sparse_box": list(sparse_size)}


def _load_complete(out_dir: str, params: dict[str, Any]) -> DecodeResult | None:
    """The finished result in ``out_dir`` if it was made with ``params``, else None."""
    try:
        with open(os.path.join(out_dir, META_FILE)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if meta.get("params") != params:
        return None
    frames = FrameSet(dir=os.path.abspath(out_dir), n_frames=meta["n_frames"],
                      sparse_size=tuple(meta["sparse_size"]))  # type: ignore[arg-type]
    return DecodeResult(frames, truncated=meta["truncated"], warning=meta["warning"], resumed=True)


def decode_video(path: str, out_dir: str, sparse_fps: float = 2.0, sparse_size: tuple[int, int] = (256, 144),
                 threads: int = 0) -> DecodeResult:
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

    Raises:
        DecodeError: the file cannot be opened, has no video stream, or yields no frame.
    """
    params = _params(sparse_fps, sparse_size)
    if (done := _load_complete(out_dir, params)) is not None:
        return done
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        meta = _decode_into(path, tmp, sparse_fps, sparse_size, threads)
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


def _decode_into(path: str, out: str, sparse_fps: float, sparse_box: tuple[int, int],
                 threads: int) -> dict[str, Any]:
    """Decode into the (temporary) directory ``out``; return the metadata to record."""
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as e:
        raise DecodeError(f"cannot open: {getattr(e, 'strerror', None) or e}") from e
    with container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: about +50% (ENVIRONMENT.md)
        stream.codec_context.thread_count = threads
        start_s = container.start_time / 1_000_000 if container.start_time is not None else 0.0
        rate = stream.average_rate or stream.guessed_rate
        frame_s = 1.0 / float(rate) if rate else 1.0 / 30

        tiny = _NpyWriter(os.path.join(out, "tiny.npy"), (TINY_SIZE[1], TINY_SIZE[0], 3), np.uint8)
        sparse: _NpyWriter | None = None
        pts: list[float] = []
        keyframe: list[bool] = []
        sparse_idx: list[int] = []
        clock = SparseClock(sparse_fps)
        tiny_scaler = sparse_scaler = None
        sparse_wh = (0, 0)
        error: str | None = None
        try:
            for frame in container.decode(stream):
                if tiny_scaler is None or tiny_scaler.key != (frame.width, frame.height, frame.format.name):
                    rotation = round(frame.rotation / 90) * 90 % 360
                    if sparse is None:  # the sparse size is fixed by the first frame
                        disp = (frame.height, frame.width) if rotation % 180 else (frame.width, frame.height)
                        sparse_wh = sparse_dims(*disp, sparse_box)
                        sparse = _NpyWriter(os.path.join(out, "sparse.npy"), (sparse_wh[1], sparse_wh[0], 3),
                                            np.uint8, chunk=16)
                    tiny_scaler = _Scaler(frame, TINY_SIZE, rotation)
                    sparse_scaler = _Scaler(frame, sparse_wh, rotation)
                t = frame.time - start_s if frame.time is not None else (pts[-1] + frame_s if pts else 0.0)
                if clock.take(t):
                    sparse_idx.append(len(pts))
                    sparse.append(sparse_scaler(frame))  # type: ignore[misc]
                tiny.append(tiny_scaler(frame))
                pts.append(t)
                keyframe.append(bool(frame.key_frame))
        except (av.FFmpegError, OSError) as e:
            error = f"decode stopped after {len(pts)} frames: {getattr(e, 'strerror', None) or e}"
        finally:
            tiny.close()
            if sparse is not None:
                sparse.close()
        if not pts:
            raise DecodeError(f"no frames decoded ({error})" if error else "no frames decoded")
        if error is None:
            error = _shortfall(stream, container, pts[-1] + frame_s, len(pts), frame_s)

    np.save(os.path.join(out, "pts.npy"), np.asarray(pts, dtype=np.float64))
    np.save(os.path.join(out, "keyframe.npy"), np.asarray(keyframe, dtype=bool))
    np.save(os.path.join(out, "sparse_idx.npy"), np.asarray(sparse_idx, dtype=np.int64))
    return {"n_frames": len(pts), "n_sparse": len(sparse_idx), "sparse_size": list(sparse_wh),
            "truncated": error is not None, "warning": error}


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


def load_tiny(frames: FrameSet) -> np.ndarray:
    """uint8 [N, 27, 48, 3], memory-mapped read-only."""
    return np.load(os.path.join(frames.dir, "tiny.npy"), mmap_mode="r")


def load_sparse(frames: FrameSet) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [M, h, w, 3] memory-mapped, int64 [M] source frame index of each)."""
    return (np.load(os.path.join(frames.dir, "sparse.npy"), mmap_mode="r"),
            np.load(os.path.join(frames.dir, "sparse_idx.npy")))


def load_timeline(frames: FrameSet) -> tuple[np.ndarray, np.ndarray]:
    """(float64 [N] frame times in seconds from the file's start, bool [N] keyframe flags)."""
    return (np.load(os.path.join(frames.dir, "pts.npy")), np.load(os.path.join(frames.dir, "keyframe.npy")))


def decode_only_fps(path: str, threads: int = 0) -> float:
    """Frames per second of decode + the tiny downscale alone, with no outputs.

    The "decode-only limit" baseline for ``decode_video``'s throughput.
    """
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        scaler: _Scaler | None = None
        n = 0
        t0 = time.perf_counter()
        for frame in container.decode(stream):
            if scaler is None:
                scaler = _Scaler(frame, TINY_SIZE, round(frame.rotation / 90) * 90 % 360)
            scaler.scale(frame)
            n += 1
        return n / (time.perf_counter() - t0)
