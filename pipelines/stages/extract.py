"""Clip extraction: the only pass over a source's bytes after the decode pass.

A span of frames [start_frame, end_frame) becomes ``<out_dir>/<video_id>/<clip_id>.mp4``, as a
**copy** when it starts on a keyframe and the first n packets from there (decode order) are
exactly its frames (with B-frames: it also ends on a keyframe or at the stream's end), else a
**reencode**: input ``-ss`` on the first frame (accurate seek drops earlier frames),
``-frames:v n`` and ``-fps_mode passthrough`` (no CFR duplicates or drops).

Each cut is verified before it is renamed into place: its demuxed frame times must be the
span's source frame times shifted to 0. A demuxer whose seek overshoots (MPEG-TS) fails that
and is cut again from a 10 s pre-roll with an exact output ``-ss``. Bitexact flags, no metadata
and fixed encoder threads make reruns byte-identical; an existing final file is reused
(resume). Rotation is baked in by autorotate (rotated sources are never copied), and odd sizes
lose at most one pixel row/column so that 4:2:0 encoders accept them.
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
_PREROLL_S = 10.0  # for demuxers whose seek overshoots (MPEG-TS)


@dataclass(frozen=True, slots=True)
class Plan:
    """How one span is cut."""

    mode: ExtractMode
    start_frame: int  # first source frame of the span
    n_frames: int  # end_frame - start_frame
    seek_s: float  # time of start_frame in seconds from the file's start, as ffmpeg's -ss counts
    tol_s: float  # half the shortest frame interval around the span: the cut check's tolerance (s)
    reason: str  # why this mode was chosen


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What extraction needs to know about a source besides its frame index."""

    codec: str
    rotation: int  # display rotation in degrees


def _us(seconds: np.ndarray) -> list[int]:
    return sorted(np.round(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64).tolist())


def plan_extraction(
    start_frame: int,
    end_frame: int,
    pts: np.ndarray,
    keyframes: np.ndarray,
    stream_copy: bool,
    *,
    copy_order_pts: np.ndarray | None = None,
    rotation: int = 0,
    source_codec: str | None = None,
) -> Plan:
    """Choose stream copy or re-encode for the frames [start_frame, end_frame).

    Args:
        start_frame, end_frame: the span, end exclusive.
        pts: float64 [N], time of every source frame in seconds from the file's start
            (``frame.time - container.start_time``, as the decode pass writes ``pts.npy``).
        keyframes: bool [N], whether each source frame is a keyframe.
        stream_copy: whether copying is allowed at all.
        copy_order_pts: presentation times (s) of the packets a stream copy from ``start_frame``
            takes, in decode order (>= n of them). None assumes decode order = presentation order.
        rotation: display rotation in degrees; rotated sources are re-encoded upright.
        source_codec: codecs outside ``_MP4_COPY_CODECS`` are re-encoded.

    Raises:
        ValueError: if the span is empty or outside the source.
    """
    if not 0 <= start_frame < end_frame <= len(pts) or len(keyframes) != len(pts):
        raise ValueError(f"span [{start_frame}, {end_frame}) is outside the source's {len(pts)} frames")
    n = end_frame - start_frame
    gaps = np.diff(pts[max(start_frame - 1, 0) : end_frame + 1])
    tol = 0.5 * float(gaps[gaps > 0].min()) if (gaps > 0).any() else 0.02

    def plan(mode: ExtractMode, reason: str) -> Plan:
        return Plan(mode, start_frame, n, float(pts[start_frame]), tol, reason)

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
            return plan(
                "reencode",
                f"the first {n} packets from keyframe {start_frame} (decode order) "
                f"are not frames [{start_frame}, {end_frame})",
            )
    return plan("copy", f"frame {start_frame} is a keyframe")


def _floor_us(seconds: float) -> int:
    return math.floor(seconds * 1e6 + 1e-3)  # + 1 ns: 1.32 * 1e6 must not floor to 1319999


def _fmt_us(us: int) -> str:
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def ffmpeg_args(
    plan: Plan,
    src: str,
    dst: str,
    *,
    codec: str,
    crf: int,
    preset: str,
    threads: int,
    start_from_s: float | None = None,
) -> list[str]:
    """The ffmpeg argument list (never a shell string) that writes ``plan`` to ``dst`` (mp4).

    Input ``-ss`` is floored to whole µs: ffmpeg keeps a frame only when its shifted time is
    >= 0, so rounding up by even 1 µs would drop it.

    Args:
        start_from_s: where the input seek goes instead of ``plan.seek_s``: an earlier frame's
            time, as a pre-roll (a frame time keeps ffmpeg's input shift a whole number of
            ticks). The exact cut is then an output ``-ss``, 1 µs early. Re-encode only:
            ffmpeg drops stream-copied packets before an output ``-ss`` by dts, not pts.
    """
    if start_from_s is not None and plan.mode == "copy":
        raise ValueError("a stream copy cannot pre-roll")
    in_us = max(0, _floor_us(plan.seek_s if start_from_s is None else start_from_s))
    out_us = _floor_us(plan.seek_s) - in_us - 1
    out_ss = ["-ss", _fmt_us(out_us)] if out_us > 0 else []
    args = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-v",
        "error",
        "-y",
        "-threads",
        str(threads),
        "-ss",
        _fmt_us(in_us),
        "-i",
        f"file:{src}",
        *out_ss,
        "-map",
        "0:v:0",
        "-frames:v",
        str(plan.n_frames),
        "-an",
        "-sn",
        "-dn",
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-metadata",
        f"comment=vidloom:{plan.mode}",
    ]  # read back on resume
    if plan.mode == "copy":  # copypriorss 0: drop packets before the cut even when the seek lands early
        args += ["-c:v", "copy", "-copypriorss", "0"]
    else:
        args += [
            "-fps_mode",
            "passthrough",
            "-vf",
            _EVEN_CROP,
            "-c:v",
            codec,
            "-pix_fmt",
            "yuv420p",
            "-crf",
            str(crf),
            "-preset",
            preset,
            "-threads",
            str(threads),
            "-flags:v",
            "+bitexact",
        ]
    return [*args, "-fflags", "+bitexact", "-movflags", "+faststart", "-f", "mp4", f"file:{dst}"]


def cut_mismatch(times: np.ndarray, pts: np.ndarray, plan: Plan) -> str | None:
    """Why a clip with frame times ``times`` (s, sorted) is not the planned span, or None if it is."""
    want = pts[plan.start_frame : plan.start_frame + plan.n_frames] - plan.seek_s
    if len(times) != len(want):
        return f"{len(times)} frames, expected {len(want)}"
    worst = float(np.abs(times - want).max())
    return None if worst < plan.tol_s else f"frame times are off by up to {worst:.4f}s"


def probe_source(src: str) -> SourceInfo:
    """Codec and display rotation of ``src``'s first video stream."""
    with av.open(src) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        rotation = 0
        # PyAV exposes the display matrix per frame only, so decode the first frame.
        for frame in container.decode(stream):
            rotation = int(frame.rotation or 0)
            break
        return SourceInfo(stream.codec_context.name, rotation)


def demux_frame_index(src: str) -> tuple[np.ndarray, np.ndarray]:
    """Frame times and keyframe flags from packets alone (no decode), like the decode pass's.

    Returns:
        (pts float64 [N] in seconds from the file's start, keyframe bool [N]), in presentation order.
    """
    rows: list[tuple[int, bool]] = []
    with av.open(src) as container:
        start_s = (container.start_time or 0) / 1_000_000
        stream = container.streams.video[0]
        tb = stream.time_base
        for p in container.demux(stream):
            t = p.pts if p.pts is not None else p.dts
            if not p.size:
                continue
            if t is None or tb is None:
                raise ValueError("video packets without timestamps")
            rows.append((t, p.is_keyframe))
    rows.sort()
    pts = np.array([float(t * tb) - start_s for t, _ in rows if tb is not None], dtype=np.float64)
    return pts, np.array([k for _, k in rows], dtype=bool)


def copy_order(src: str, seek_s: float, n: int) -> np.ndarray:
    """Times (s from the file's start) of the n packets a stream copy from ``seek_s`` takes.

    Returns an empty array when packets lack pts (nothing to check; no copy).

    Raises:
        ValueError: if no packet is shown at ``seek_s`` (the frame index is not this source's).
    """
    with av.open(src) as container:
        start_s = (container.start_time or 0) / 1_000_000
        stream = container.streams.video[0]
        tb = stream.time_base
        if tb is None:
            return np.zeros(0)
        half_tick = max(0.5 * float(tb), 1e-6)
        for preroll in (0.0, _PREROLL_S):  # some demuxers (MPEG-TS) seek past the target
            target = max(0, math.floor((seek_s + start_s - preroll) / float(tb) + 1e-6))
            container.seek(target, stream=stream, backward=True, any_frame=False)
            taken: list[float] = []
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if packet.pts is None:
                    return np.zeros(0)
                t = float(packet.pts * tb) - start_s
                if taken or abs(t - seek_s) < half_tick:
                    taken.append(t)
                    if len(taken) == n:
                        break
                elif packet.dts is not None and float(packet.dts * tb) > seek_s + 10.0:
                    break
            if taken:
                return np.array(taken, dtype=np.float64)
    raise ValueError(f"no packet is shown at {seek_s:.6f}s: the frame index does not match the source")


def probe_clip(path: str) -> tuple[str, np.ndarray, int, int, str | None]:
    """(codec, sorted frame times in s by demuxing, width, height, extract mode) of a clip."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base or 0)
        times = sorted(float(p.pts or 0) * tb for p in container.demux(stream) if p.size)
        mode = container.metadata.get("comment", "").removeprefix("vidloom:") or None
        return stream.codec_context.name, np.array(times, dtype=np.float64), stream.width, stream.height, mode


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
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def from_config(cls, cfg: ExtractConfig, out_dir: str) -> ClipExtract:
        return cls(out_dir=out_dir, **dataclasses.asdict(cfg))

    def process(self, task: ClipTask) -> ClipTask:
        if task.clip.status == "rejected":  # decided before extraction: no encode is wasted on it
            return task
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
        plan = plan_extraction(
            clip.start_frame,
            clip.end_frame,
            pts,
            keyframes,
            self.stream_copy,
            rotation=info.rotation,
            source_codec=info.codec,
        )  # validates the span
        order = copy_order(src, plan.seek_s, plan.n_frames if plan.mode == "copy" else 1)  # checks the index
        if plan.mode == "copy":
            plan = plan_extraction(
                clip.start_frame, clip.end_frame, pts, keyframes, True, copy_order_pts=order
            )
        if not final.exists():  # resume: an existing final file is complete (atomic rename)
            final.parent.mkdir(parents=True, exist_ok=True)
            self._cut(plan, src, final, pts)
        codec, times, width, height, mode = probe_clip(str(final))
        problem = cut_mismatch(times, pts, plan)
        if problem:
            raise ValueError(f"{final}: {problem}")
        clip.path = f"{out_dir.name}/{clip.video_id}/{clip.clip_id}.mp4"
        clip.codec = codec
        clip.extract_mode = mode or plan.mode
        clip.n_frames = len(times)
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

    def _cut(self, plan: Plan, src: str, final: Path, pts: np.ndarray) -> None:
        """Cut to a temp file until a cut verifies (copy, else re-encode, else re-encode from a
        pre-roll), then fsync it and rename it into place."""
        tmp = final.with_name(f".{final.stem}.{os.getpid()}.part")
        reencode = dataclasses.replace(plan, mode="reencode", reason=f"{plan.reason}; the copy failed")
        first = max(0, int(np.searchsorted(pts, plan.seek_s - _PREROLL_S, "right")) - 1)
        attempts = [(plan, None), (reencode, None)] if plan.mode == "copy" else [(plan, None)]
        failures: list[str] = []
        try:
            for attempt, start_from in [*attempts, (reencode, float(pts[first]))]:
                args = ffmpeg_args(
                    attempt,
                    src,
                    str(tmp),
                    codec=self.codec,
                    crf=self.crf,
                    preset=self.preset,
                    threads=self.threads,
                    start_from_s=start_from,
                )
                proc = subprocess.run(args, capture_output=True, text=True, errors="replace", check=False)
                problem = (
                    f"ffmpeg exited with {proc.returncode}: {proc.stderr.strip()[-_STDERR_TAIL:]}"
                    if proc.returncode
                    else cut_mismatch(probe_clip(str(tmp))[1], pts, plan)
                )
                if not problem:
                    with open(tmp, "rb") as f:
                        os.fsync(f.fileno())
                    os.replace(tmp, final)
                    return
                failures.append(f"{attempt.mode}{'' if start_from is None else ' (pre-roll)'}: {problem}")
            raise ValueError("; ".join(failures))
        finally:
            tmp.unlink(missing_ok=True)
