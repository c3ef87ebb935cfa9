"""Clip extraction: the only pass over a source's bytes after the decode pass.

A span of frames [start_frame, end_frame) becomes ``<out_dir>/<video_id>/<clip_id>.mp4``:

* **copy** when the span starts exactly on a keyframe *and* a stream copy of the first n
  packets from that keyframe (decode order) holds exactly the span's frames. With B-frames
  that only holds when the span also ends on a keyframe or at the end of the stream, so the
  planner checks the packet order instead of assuming it.
* **reencode** otherwise: ffmpeg seeks before ``-i`` to the span's first frame (accurate
  seek decodes from the previous keyframe and drops everything earlier), ``-frames:v n``
  stops after exactly n frames, and ``-fps_mode passthrough`` forbids CFR duplicate/drop.

Outputs are deterministic (bitexact flags, no metadata, fixed encoder threads), so a rerun
gives byte-identical files. Each file is written under a temp name, checked (frame count) and
renamed; an existing final file is reused (resume). Rotation is baked in by ffmpeg's
autorotate (a rotated source is never stream-copied), and odd sizes lose at most one pixel
row/column so that 4:2:0 encoders accept them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import av
import numpy as np

from pipelines.config import ExtractConfig
from pipelines.stage import Resources, Stage
from pipelines.tasks import ClipTask

ExtractMode = Literal["copy", "reencode"]

_HEX_ID = re.compile(r"[0-9a-f]{1,64}")
# Cropping (not scaling or padding) keeps every remaining pixel 1:1 with the source.
_EVEN_CROP = "crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0"
# Codecs that ffmpeg's mp4 muxer takes as a stream copy.
_MP4_COPY_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4"})
_STDERR_TAIL = 1500


@dataclass(frozen=True, slots=True)
class Plan:
    """How one span is cut.

    Attributes:
        mode: 'copy' or 'reencode'.
        start_frame: first source frame of the span.
        n_frames: frames in the span (end_frame - start_frame).
        seek_s: presentation time of ``start_frame`` on the source's stream clock, in seconds.
        reason: why this mode was chosen.
    """

    mode: ExtractMode
    start_frame: int
    n_frames: int
    seek_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What extraction needs to know about a source besides its frame index."""

    codec: str
    start_us: int  # container start time in µs: the origin of ffmpeg's input -ss
    rotation: int  # display rotation in degrees


def _us(seconds: np.ndarray) -> list[int]:
    return sorted(np.round(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64).tolist())


def plan_extraction(start_frame: int, end_frame: int, pts: np.ndarray, keyframes: np.ndarray,
                    stream_copy: bool, *, copy_order_pts: np.ndarray | None = None, rotation: int = 0,
                    source_codec: str | None = None) -> Plan:
    """Choose stream copy or re-encode for the frames [start_frame, end_frame).

    Args:
        start_frame: first frame (inclusive).
        end_frame: end frame (exclusive).
        pts: float64 [N], presentation time of every source frame in seconds.
        keyframes: bool [N], whether each source frame is a keyframe.
        stream_copy: whether copying is allowed at all.
        copy_order_pts: presentation times (s) of the packets a stream copy starting at
            ``start_frame`` would take, in decode order (at least n of them). None skips the
            check, i.e. assumes decode order equals presentation order.
        rotation: source display rotation in degrees; rotated sources are re-encoded upright.
        source_codec: the source codec name; codecs mp4 cannot hold by copy are re-encoded.

    Returns:
        The plan.

    Raises:
        ValueError: if the span is empty or outside the source.
    """
    if not 0 <= start_frame < end_frame <= len(pts) or len(keyframes) != len(pts):
        raise ValueError(f"span [{start_frame}, {end_frame}) is outside the source's {len(pts)} frames")
    n = end_frame - start_frame

    def plan(mode: ExtractMode, reason: str) -> Plan:
        return Plan(mode, start_frame, n, float(pts[start_frame]), reason)

    if not stream_copy:
        return plan("reencode", "stream copy disabled")
    if rotation % 360:
        return plan("reencode", f"source is rotated {rotation} degrees")
    if source_codec is not None and source_codec not in _MP4_COPY_CODECS:
        return plan("reencode", f"codec {source_codec} is not stream-copied into mp4")
    if not keyframes[start_frame]:
        return plan("reencode", f"frame {start_frame} is not a keyframe")
    if copy_order_pts is not None:
        taken = np.asarray(copy_order_pts)[:n]
        if len(taken) < n or _us(taken) != _us(pts[start_frame:end_frame]):
            return plan("reencode", f"the first {n} packets from keyframe {start_frame} (decode order) "
                                    f"are not frames [{start_frame}, {end_frame})")
    return plan("copy", f"frame {start_frame} is a keyframe")


def seek_arg(seek_s: float, container_start_us: int = 0) -> str:
    """The input ``-ss`` value that lands on the frame shown at ``seek_s``, floored to whole µs.

    ffmpeg measures input ``-ss`` from the container's start time and keeps a frame only when
    its shifted timestamp is >= 0, so rounding *up* by even 1 µs would drop the target frame.
    """
    us = max(0, math.floor(seek_s * 1e6 + 1e-3) - container_start_us)
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def ffmpeg_args(plan: Plan, src: str, dst: str, *, codec: str, crf: int, preset: str, threads: int,
                container_start_us: int = 0) -> list[str]:
    """The ffmpeg argument list (never a shell string) that writes ``plan`` to ``dst`` (mp4)."""
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", "-threads", str(threads),
            "-ss", seek_arg(plan.seek_s, container_start_us), "-i", f"file:{src}",
            "-map", "0:v:0", "-frames:v", str(plan.n_frames), "-an", "-sn", "-dn",
            "-map_metadata", "-1", "-map_chapters", "-1"]
    if plan.mode == "copy":
        args += ["-c:v", "copy"]
    else:
        args += ["-fps_mode", "passthrough", "-vf", _EVEN_CROP, "-c:v", codec, "-pix_fmt", "yuv420p",
                 "-crf", str(crf), "-preset", preset, "-threads", str(threads), "-flags:v", "+bitexact"]
    return [*args, "-fflags", "+bitexact", "-movflags", "+faststart", "-f", "mp4", f"file:{dst}"]


def probe_source(src: str) -> SourceInfo:
    """Codec, container start time and display rotation of ``src``'s first video stream."""
    with av.open(src) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        rotation = 0
        # PyAV exposes the display matrix per frame only, so decode the first frame.
        for frame in container.decode(stream):
            rotation = int(frame.rotation or 0)
            break
        return SourceInfo(stream.codec_context.name, int(container.start_time or 0), rotation)


def demux_frame_index(src: str) -> tuple[np.ndarray, np.ndarray]:
    """Frame times and keyframe flags from packets alone (no decode).

    Returns:
        (pts float64 [N] in seconds, keyframe bool [N]), in presentation order.
    """
    with av.open(src) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        rows = [(p.pts if p.pts is not None else p.dts, p.is_keyframe)
                for p in container.demux(stream) if p.size]
    if any(t is None for t, _ in rows) or tb is None:
        raise ValueError("video packets without timestamps")
    rows.sort(key=lambda r: r[0])
    pts = np.array([float(t * tb) for t, _ in rows], dtype=np.float64)
    return pts, np.array([k for _, k in rows], dtype=bool)


def copy_order(src: str, seek_s: float, n: int) -> np.ndarray:
    """Presentation times (s) of the n packets from the one shown at ``seek_s``, in decode order.

    These are the packets ``-ss seek_s -c copy -frames:v n`` takes. Finding the packet also
    checks that the frame index's timestamps match the source.

    Raises:
        ValueError: if no packet is shown at ``seek_s`` or packets lack timestamps.
    """
    with av.open(src) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        if tb is None:
            raise ValueError("video stream without a time base")
        half_tick = max(0.5 * float(tb), 1e-6)
        container.seek(math.floor(seek_s / float(tb) + 1e-6), stream=stream, backward=True, any_frame=False)
        taken: list[float] = []
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if packet.pts is None:
                raise ValueError("video packets without pts")
            t = float(packet.pts * tb)
            if taken or abs(t - seek_s) < half_tick:
                taken.append(t)
                if len(taken) == n:
                    break
            elif packet.dts is not None and float(packet.dts * tb) > seek_s + 10.0:
                break
    if not taken:
        raise ValueError(f"no packet is shown at {seek_s:.6f}s: the frame index does not match the source")
    return np.array(taken, dtype=np.float64)


def probe_clip(path: str) -> tuple[str, int, int, int]:
    """(codec, frame count by demuxing, width, height) of an extracted clip."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        n = sum(1 for p in container.demux(stream) if p.size)
        return stream.codec_context.name, n, stream.width, stream.height


@dataclass
class ClipExtract(Stage[ClipTask, ClipTask]):
    """Cut one clip span to ``<out_dir>/<video_id>/<clip_id>.mp4`` (see the module docstring).

    ``out_dir`` is normally ``<out>/clips``; ``clip.path`` is recorded relative to its parent,
    the output root, e.g. ``clips/<video_id>/<clip_id>.mp4``. ``threads`` is part of the
    output's identity: x264 output depends on it, so 0 (auto) is not reproducible across machines.
    """

    name: ClassVar[str] = "extract"
    resources: ClassVar[Resources] = Resources(cpus=1.0)  # one ffmpeg process at `threads` threads

    out_dir: str = field(compare=False)  # where, not what: not part of params_hash
    codec: str = "libx264"
    crf: int = 18
    preset: str = "veryfast"
    stream_copy: bool = True
    threads: int = 1
    _index: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_config(cls, cfg: ExtractConfig, out_dir: str) -> ClipExtract:
        return cls(out_dir=out_dir, **dataclasses.asdict(cfg))

    def process(self, task: ClipTask) -> ClipTask:
        try:
            self._extract(task)
        except (OSError, ValueError, av.FFmpegError, subprocess.SubprocessError) as exc:
            task.error = f"extract {task.clip.clip_id}: {exc}"
        return task

    def _extract(self, task: ClipTask) -> None:
        clip = task.clip
        for ident in (clip.video_id, clip.clip_id):
            if not _HEX_ID.fullmatch(ident):
                raise ValueError(f"id {ident!r} is not lowercase hex")
        out_dir = Path(self.out_dir)
        final = out_dir / clip.video_id / f"{clip.clip_id}.mp4"
        src = os.path.abspath(task.src_path)
        info = probe_source(src)
        pts, keyframes = self._frame_index(src, task.frames_dir)
        if not 0 <= clip.start_frame < clip.end_frame <= len(pts):
            raise ValueError(f"span [{clip.start_frame}, {clip.end_frame}) is outside the source's "
                             f"{len(pts)} frames")
        order = copy_order(src, float(pts[clip.start_frame]), clip.end_frame - clip.start_frame)
        plan = plan_extraction(clip.start_frame, clip.end_frame, pts, keyframes, self.stream_copy,
                               copy_order_pts=order, rotation=info.rotation, source_codec=info.codec)
        if not final.exists():  # resume: an existing final file is complete (atomic rename)
            final.parent.mkdir(parents=True, exist_ok=True)
            self._run_ffmpeg(plan, src, final, info)
        codec, n_frames, width, height = probe_clip(str(final))
        if n_frames != plan.n_frames:
            raise ValueError(f"{final} has {n_frames} frames, expected {plan.n_frames}")
        clip.path = f"{out_dir.name}/{clip.video_id}/{clip.clip_id}.mp4"
        clip.codec = codec
        clip.extract_mode = plan.mode
        clip.n_frames = n_frames
        clip.bytes = final.stat().st_size
        clip.width, clip.height = width, height

    def _frame_index(self, src: str, frames_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
        if frames_dir:
            pts_file, key_file = Path(frames_dir) / "pts.npy", Path(frames_dir) / "keyframe.npy"
            if pts_file.is_file() and key_file.is_file():
                pts, keys = np.load(pts_file).astype(np.float64), np.load(key_file).astype(bool)
                if len(pts) != len(keys):
                    raise ValueError(f"{frames_dir}: pts.npy and keyframe.npy differ in length")
                return pts, keys
        if src not in self._index:
            self._index.clear()  # clips of one video usually arrive together; keep one index
            self._index[src] = demux_frame_index(src)
        return self._index[src]

    def _run_ffmpeg(self, plan: Plan, src: str, final: Path, info: SourceInfo) -> None:
        tmp = final.with_name(f".{final.stem}.{os.getpid()}.part")
        args = ffmpeg_args(plan, src, str(tmp), codec=self.codec, crf=self.crf, preset=self.preset,
                           threads=self.threads, container_start_us=info.start_us)
        try:
            proc = subprocess.run(args, capture_output=True, text=True, errors="replace", check=False)
            if proc.returncode != 0:
                tail = proc.stderr.strip()[-_STDERR_TAIL:]
                raise ValueError(f"ffmpeg {plan.mode} exited with {proc.returncode}: {tail}")
            n_frames = probe_clip(str(tmp))[1]
            if n_frames != plan.n_frames:  # never let a wrong cut land under the final name
                raise ValueError(f"ffmpeg {plan.mode} wrote {n_frames} frames, expected {plan.n_frames}")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
