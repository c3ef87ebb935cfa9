"""Probing one input: hash it, open it with PyAV and fill a ``Video`` (pure functions; the ingest
stage, pipelines/stages/ingest.py, and the remote probe, pipelines/remote_inputs.py, both call them).

Conventions of the probed ``Video``:
    rotation: counter-clockwise degrees of the display matrix, normalised to
        0/90/180/270 (FFmpeg's and PyAV's ``VideoFrame.rotation`` convention).
    width/height: the *displayed* size, after rotation. The coded size is
        (height, width) when rotation is 90 or 270.
    n_frames: exact when the container stores a frame count (mp4/mov); otherwise
        estimated as round(duration * fps). The decode pass sets the exact count.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
from collections.abc import Iterable
from fractions import Fraction
from typing import TYPE_CHECKING

from curation.schema import ID_LEN, Video

if TYPE_CHECKING:
    from av.container import InputContainer

HASH_CHUNK = 1 << 20  # 1 MiB: streaming, constant memory
VFR_PACKETS = 200  # packets demuxed to tell constant from variable frame rate
# Packets come in decode order: with B-frames, the frames just before the cut arrive
# after it. Ignoring the last timestamps before the cut keeps those gaps out.
_REORDER_SLACK = 16
MIN_SIDE = 16
MIN_FPS, MAX_FPS = 1.0, 480.0
# Container formats that hold single images (PyAV opens a PNG renamed .mp4 as png_pipe).
_IMAGE_CODECS = frozenset({"png", "mjpeg", "jpeg2000", "bmp", "tiff", "webp", "gif", "jpegls", "qoi"})

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
MAX_DURATION_S = 6 * 3600.0  # the ingest section's defaults (pipelines/stages/ingest.py)
MAX_PIXELS = 8192 * 8192


def sha256_file(path: str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def display_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """The (width, height) a viewer sees once ``rotation`` (degrees) is applied."""
    return (height, width) if rotation % 180 == 90 else (width, height)


def is_vfr(pts: Iterable[int], tolerance_ticks: int = 2) -> bool:
    """Whether frame timestamps (one stream, any order) have a variable spacing.

    A spread of up to ``tolerance_ticks`` (or 2% of the median step) is rounding,
    e.g. 29.97 fps in a 1 ms time base alternates 33/34.
    """
    ordered = sorted(set(pts))
    deltas = sorted(b - a for a, b in itertools.pairwise(ordered))
    if len(deltas) < 2:
        return False
    median = deltas[len(deltas) // 2]
    return deltas[-1] - deltas[0] > max(tolerance_ticks, 0.02 * median)


def discover_inputs(sources: list[str], extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[str]:
    """Expand files, directories and glob patterns into sorted, unique absolute paths.

    A file named explicitly is kept whatever its extension (it gets a row, possibly
    an error row). Directories are walked recursively, keeping files whose extension
    is in ``extensions`` (case-insensitive); directory symlinks are not followed, so
    symlink loops cannot recurse. A source that matches nothing is skipped.
    """
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    found: set[str] = set()

    def add_dir(root: str) -> None:
        for dirpath, _dirs, files in os.walk(root, followlinks=False):
            for name in files:
                if name.lower().endswith(exts):
                    found.add(os.path.abspath(os.path.join(dirpath, name)))

    for src in sources:
        if os.path.isdir(src):
            add_dir(src)
        elif os.path.lexists(src):
            found.add(os.path.abspath(src))
        elif glob.has_magic(src):
            for match in glob.glob(src, recursive=True):
                if os.path.isdir(match):
                    add_dir(match)
                elif match.lower().endswith(exts):
                    found.add(os.path.abspath(match))
    return sorted(found)


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def probe_local(
    path: str, max_duration_s: float = MAX_DURATION_S, max_pixels: int = MAX_PIXELS
) -> Video:
    """Hash and probe one local file. Never raises: problems become an error ``Video``."""
    import av  # heavy dependency stays behind the stage boundary

    try:
        size = os.path.getsize(path)
        sha = sha256_file(path)
    except OSError as e:
        # No bytes to hash: identity falls back to the path, so the row still has an id.
        sha = hashlib.sha256(f"path:{path}".encode()).hexdigest()
        reason = "file not found" if isinstance(e, FileNotFoundError) else f"cannot read: {e.strerror or e}"
        return Video(video_id=sha[:ID_LEN], path=path, sha256=sha, status="error", error=reason)

    video = Video(video_id=sha[:ID_LEN], path=path, sha256=sha, size_bytes=size)
    if size == 0:
        return error_video(video, "empty file")
    try:
        with av.open(path) as container:
            error = fill_from_container(video, container)
    except av.FFmpegError as e:
        error = f"cannot open: {av_message(e)}"
    except (OSError, ValueError, RuntimeError) as e:  # PyAV surfaces some failures as plain errors
        error = f"cannot open: {e}"
    if error is None:
        error = check_bounds(video, max_duration_s, max_pixels)
    return video if error is None else error_video(video, error)


def fill_from_container(video: Video, container: InputContainer) -> str | None:
    """Fill ``video`` from an open container; return an error message or None."""
    video.has_audio = bool(container.streams.audio)
    if not container.streams.video:
        return "no video stream (audio-only)" if video.has_audio else "no video stream"
    stream = container.streams.video[0]
    ctx = stream.codec_context
    video.codec = ctx.name
    fps_rate = stream.average_rate or stream.guessed_rate
    duration = _seconds(stream.duration, stream.time_base)
    if duration is None and container.duration is not None:
        duration = container.duration / 1_000_000
    fmt = container.format.name
    image_format = fmt in ("image2", "image2pipe") or fmt.endswith("_pipe")
    if image_format or (ctx.name in _IMAGE_CODECS and stream.frames <= 1 and not duration):
        return "still image, not a video"
    if fps_rate is None and stream.frames and duration:
        fps_rate = Fraction(stream.frames / duration).limit_denominator(1001)
    video.fps = float(fps_rate) if fps_rate else None
    video.duration_s = duration

    # Demux the first packets (VFR check) and decode the first frame (rotation). No
    # frame threading here: it would hold back the first frame for several packets.
    pts: list[int] = []
    rotation = 0
    first_frame = True
    for packet in container.demux(stream):
        if packet.pts is not None:
            pts.append(packet.pts)
        if first_frame and packet.size:
            for frame in packet.decode():
                rotation, first_frame = frame.rotation, False
                break
        if len(pts) >= VFR_PACKETS:
            break
    if first_frame:  # a very short file: the decoder still holds its frames
        rotation = next((f.rotation for f in ctx.decode(None)), 0)
    if not pts:
        return "cannot open: no decodable video packets"
    video.rotation = round(rotation / 90) * 90 % 360
    video.vfr = is_vfr(sorted(pts)[:-_REORDER_SLACK] if len(pts) >= VFR_PACKETS else pts)
    video.width, video.height = display_size(ctx.width, ctx.height, video.rotation)
    if stream.frames > 0:
        video.n_frames = stream.frames
    elif duration and video.fps:
        video.n_frames = round(duration * video.fps)
    return None


def check_bounds(video: Video, max_duration_s: float, max_pixels: int) -> str | None:
    w, h = video.width or 0, video.height or 0
    if w < MIN_SIDE or h < MIN_SIDE:
        return f"frame size {w}x{h} is too small (under {MIN_SIDE} px)"
    if w * h > max_pixels:
        return f"frame size {w}x{h} exceeds max_pixels={max_pixels}"
    if video.duration_s is None or video.duration_s <= 0:
        return "unknown or zero duration"
    if video.duration_s > max_duration_s:
        return f"duration {video.duration_s:.0f} s exceeds max_duration_s={max_duration_s:.0f}"
    if video.fps is None or not MIN_FPS <= video.fps <= MAX_FPS:
        return f"frame rate {video.fps} is outside [{MIN_FPS:g}, {MAX_FPS:g}] fps"
    return None


def av_message(e: Exception) -> str:
    strerror = getattr(e, "strerror", None)
    return str(strerror) if strerror else str(e)


def error_video(video: Video, error: str) -> Video:
    video.status, video.error = "error", error
    return video
