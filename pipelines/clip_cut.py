"""How a clip span is cut: the plan (copy or re-encode), the ffmpeg arguments, and the
frame-time checks that verify a cut. Pure functions and small probes; the stage that runs
them is pipelines/stages/extract.py (see its docstring for the whole procedure).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import av
import numpy as np

ExtractMode = Literal["copy", "reencode"]

HEX_ID = re.compile(r"[0-9a-f]{1,64}")
# Cropping (not scaling or padding) keeps every remaining pixel 1:1 with the source.
_EVEN_CROP = "crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0"
# Codecs that ffmpeg's mp4 muxer takes as a stream copy.
_MP4_COPY_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4"})
STDERR_TAIL = 1500
SEEK_FAILED = "could not seek to position"  # ffmpeg's warning when an input -ss seek fails
PREROLL_S = 10.0  # for demuxers whose seek overshoots (MPEG-TS)


CropBox = tuple[int, int, int, int]  # (x, y, w, h) in source pixels, even (4:2:0)


def crop_box(clip: Any) -> CropBox | None:
    """A clip's ``extract_crop_*`` box, or None when it is cut whole."""
    box = (clip.extract_crop_x, clip.extract_crop_y, clip.extract_crop_w, clip.extract_crop_h)
    return None if None in box else box  # type: ignore[return-value]


def clip_file_name(clip: Any) -> str:
    """``<clip_id>.mp4``, or ``<clip_id>_crop_<x>_<y>_<w>_<h>.mp4`` for a cropped cut: a crop
    changed by a later ``--rescore`` names a new file instead of reusing the old one."""
    box = crop_box(clip)
    return f"{clip.clip_id}.mp4" if box is None else f"{clip.clip_id}_crop_{'_'.join(map(str, box))}.mp4"


@dataclass(frozen=True, slots=True)
class Plan:
    """How one span is cut."""

    mode: ExtractMode
    start_frame: int  # first source frame of the span
    n_frames: int  # end_frame - start_frame
    seek_s: float  # time of start_frame in seconds from the file's start, as ffmpeg's -ss counts
    tol_s: float  # half the shortest frame interval around the span: the cut check's tolerance (s)
    reason: str  # why this mode was chosen
    crop: CropBox | None = None  # re-encode only: the part of the (upright) frame that is kept


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
    crop: CropBox | None = None,
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
        crop: (x, y, w, h) to keep of the upright frame; a cropped clip is always re-encoded.

    Raises:
        ValueError: if the span is empty or outside the source.
    """
    if not 0 <= start_frame < end_frame <= len(pts) or len(keyframes) != len(pts):
        raise ValueError(f"span [{start_frame}, {end_frame}) is outside the source's {len(pts)} frames")
    n = end_frame - start_frame
    gaps = np.diff(pts[max(start_frame - 1, 0) : end_frame + 1])
    tol = 0.5 * float(gaps[gaps > 0].min()) if (gaps > 0).any() else 0.02

    def plan(mode: ExtractMode, reason: str) -> Plan:
        return Plan(mode, start_frame, n, float(pts[start_frame]), tol, reason, crop)

    if crop is not None:
        x, y, w, h = crop
        if min(x, y) < 0 or w <= 0 or h <= 0 or (x | y | w | h) % 2:
            raise ValueError(f"crop {crop} is not an even box inside the frame")
        return plan("reencode", f"cropped to {w}x{h}+{x}+{y}")
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
    >= 0, so rounding up by even 1 µs would drop it. A cut from the file's start (an input
    seek of 0) passes no input ``-ss`` at all: a seek is not needed there, and some demuxers'
    seeks near the start lose the first packet (AVI with packed B-frames: ffmpeg 5.1 warns
    "could not seek" and starts at the second frame).

    Args:
        start_from_s: where the input seek goes instead of ``plan.seek_s``: an earlier frame's
            time, as a pre-roll (a frame time keeps ffmpeg's input shift a whole number of
            ticks), or 0.0 to decode from the file's start without a seek. The exact cut is
            then an output ``-ss``, 1 µs early. Re-encode only:
            ffmpeg drops stream-copied packets before an output ``-ss`` by dts, not pts.
    """
    if start_from_s is not None and plan.mode == "copy":
        raise ValueError("a stream copy cannot pre-roll")
    in_us = max(0, _floor_us(plan.seek_s if start_from_s is None else start_from_s))
    out_us = _floor_us(plan.seek_s) - in_us - 1
    out_ss = ["-ss", _fmt_us(out_us)] if out_us > 0 else []
    in_ss = ["-ss", _fmt_us(in_us)] if in_us > 0 else []
    args = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-v",
        "warning",  # not error: a failed input seek is only a warning (SEEK_FAILED)
        "-y",
        "-threads",
        str(threads),
        *in_ss,
        "-i",
        src if src.startswith(("http://", "https://")) else f"file:{src}",  # a streamed remote source
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
            _EVEN_CROP if plan.crop is None else "crop={2}:{3}:{0}:{1}:exact=1".format(*plan.crop),
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
        for preroll in (0.0, PREROLL_S):  # some demuxers (MPEG-TS) seek past the target
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
        if not container.streams.video:  # e.g. a stream copy that ffmpeg could not mux
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        tb = float(stream.time_base or 0)
        times = sorted(float(p.pts or 0) * tb for p in container.demux(stream) if p.size)
        mode = container.metadata.get("comment", "").removeprefix("vidloom:") or None
        return stream.codec_context.name, np.array(times, dtype=np.float64), stream.width, stream.height, mode
