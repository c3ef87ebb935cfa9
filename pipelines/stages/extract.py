"""Clip extraction: the only pass over a source's bytes after the decode pass.

A span of frames [start_frame, end_frame) becomes ``<out_dir>/<video_id>/<clip_id>.mp4``, as a
**copy** when it starts on a keyframe and the first n packets from there (decode order) are
exactly its frames (with B-frames: it also ends on a keyframe or at the stream's end), else a
**reencode**: input ``-ss`` on the first frame (accurate seek drops earlier frames),
``-frames:v n`` and ``-fps_mode passthrough`` (no CFR duplicates or drops).

Each cut is verified before it is renamed into place: its demuxed frame times must be the
span's source frame times shifted to 0. A demuxer whose seek overshoots (MPEG-TS) fails that
and is cut again from a 10 s pre-roll with an exact output ``-ss``; one whose input seek fails
(ffmpeg warns "could not seek": AVI with B-frames near its start) is cut again from the file's
start with no input seek. Frame times come from the decode pass's ``pts.npy``, made
non-decreasing (``decode.presentation_times``: packed B-frames get permuted labels). Bitexact
flags, no metadata and fixed encoder threads make reruns byte-identical; an existing final file is reused
(resume). Rotation is baked in by autorotate (rotated sources are never copied), and odd sizes
lose at most one pixel row/column so that 4:2:0 encoders accept them.

A clip whose overlay text the filter step crops off (``extract_crop_*``, pipelines/text_crop.py)
is re-encoded through ffmpeg's ``crop`` filter (after autorotate: the box is in upright source
pixels) to ``<clip_id>_crop_<x>_<y>_<w>_<h>.mp4``; its size is checked against the box.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import av
import numpy as np

from pipelines.clip_cut import (
    HEX_ID,
    PREROLL_S,
    SEEK_FAILED,
    STDERR_TAIL,
    Plan,
    clip_file_name,
    copy_order,
    crop_box,
    cut_mismatch,
    demux_frame_index,
    ffmpeg_args,
    plan_extraction,
    probe_clip,
    probe_source,
)
from pipelines.decode import presentation_times
from pipelines.remote import ffmpeg_input, is_url, redact
from pipelines.stage import Resources, Stage
from pipelines.tasks import ClipTask


@dataclass
class ExtractConfig:
    codec: str = "libx264"  # ffmpeg encoder of re-encoded clips
    crf: int = 18  # its constant rate factor
    preset: str = "veryfast"  # its speed preset
    stream_copy: bool = True  # copy when the span starts on a keyframe
    threads: int = 1  # per ffmpeg process; Ray runs several in parallel

    # (low, high, low exclusive) by field, checked at load (pipelines/config_check.py; others: >= 0)
    RANGES: ClassVar[dict[str, tuple[float | None, float | None, bool]]] = {"crf": (0, 63, False)}


@dataclass
class ClipExtract(ExtractConfig, Stage[ClipTask, ClipTask]):
    """Cut one clip span to ``<out_dir>/<video_id>/<clip_id>.mp4`` (see the module docstring).

    ``out_dir`` is normally ``<out>/clips``; ``clip.path`` is recorded relative to its parent,
    the output root, e.g. ``clips/<video_id>/<clip_id>.mp4``. ``threads`` is part of the
    output's identity: x264 output depends on it, so 0 (auto) is not reproducible across machines.
    """

    name: ClassVar[str] = "extract"
    resources: ClassVar[Resources] = Resources(cpus=1.0)  # one ffmpeg process at `threads` threads

    out_dir: str = field(kw_only=True, compare=False)  # where, not what: not part of params_hash
    _index: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def process(self, task: ClipTask) -> ClipTask:
        if task.clip.status == "rejected":  # decided before extraction: no encode is wasted on it
            return task
        try:
            self._extract(task)
        except (OSError, ValueError, av.FFmpegError, subprocess.SubprocessError) as exc:
            task.error = redact(f"extract {task.clip.clip_id}: {exc}")  # no URL signatures kept
        return task

    def _extract(self, task: ClipTask) -> None:
        clip = task.clip
        for ident in (clip.video_id, clip.clip_id):
            if not HEX_ID.fullmatch(ident):
                raise ValueError(f"id {ident!r} is not lowercase hex")
        out_dir = Path(self.out_dir)
        final = out_dir / clip.video_id / clip_file_name(clip)
        # a URL source: ffmpeg and PyAV stream it over http(s) (a signed URL for s3/gs)
        src = ffmpeg_input(task.src_path) if is_url(task.src_path) else os.path.abspath(task.src_path)
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
            crop=crop_box(clip),
        )  # validates the span (and the crop)
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
        if plan.crop is not None and (width, height) != plan.crop[2:]:
            problem = f"{width}x{height}, expected the crop's {plan.crop[2]}x{plan.crop[3]}"
        if problem:
            raise ValueError(f"{final}: {problem}")
        clip.path = f"{out_dir.name}/{clip.video_id}/{final.name}"
        clip.codec = codec
        clip.extract_mode = mode or plan.mode
        clip.n_frames = len(times)
        clip.bytes = final.stat().st_size
        clip.width, clip.height = width, height

    def _frame_index(self, src: str, frames_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
        if frames_dir:
            pts_file, key_file = Path(frames_dir) / "pts.npy", Path(frames_dir) / "keyframe.npy"
            if pts_file.is_file() and key_file.is_file():
                pts, keys = presentation_times(np.load(pts_file)), np.load(key_file).astype(bool)
                if len(pts) != len(keys):
                    raise ValueError(f"{frames_dir}: pts.npy and keyframe.npy differ in length")
                return pts, keys
        if src not in self._index:
            self._index.clear()  # clips of one video usually arrive together; keep one index
            self._index[src] = demux_frame_index(src)
        return self._index[src]

    @staticmethod
    def _check(tmp: Path, pts: np.ndarray, plan: Plan) -> str | None:
        """Why the cut in ``tmp`` is not the span, or None. A file ffmpeg wrote without a
        readable video stream (a stream copy of packed B-frames into mp4 can be one) is a
        failed attempt like any other, not the end of the clip."""
        try:
            return cut_mismatch(probe_clip(str(tmp))[1], pts, plan)
        except (ValueError, av.FFmpegError) as exc:
            return str(exc).replace(str(tmp), "the cut")

    def _cut(self, plan: Plan, src: str, final: Path, pts: np.ndarray) -> None:
        """Cut to a temp file until a cut verifies (copy, else re-encode, else re-encode from a
        pre-roll, else, after ffmpeg reported a failed seek, re-encode from the file's start
        with no input seek), then fsync it and rename it into place.

        A failed seek fails the attempt even when the frame times check out: ffmpeg goes on
        reading from wherever the demuxer was left (AVI with B-frames whose first frame is at
        1 tick: it loses the first packet and decodes garbage up to the next keyframe)."""
        tmp = final.with_name(f".{final.stem}.{os.getpid()}.part")
        reencode = dataclasses.replace(plan, mode="reencode", reason=f"{plan.reason}; the copy failed")
        first = max(0, int(np.searchsorted(pts, plan.seek_s - PREROLL_S, "right")) - 1)
        attempts: list[tuple[Plan, float | None]] = [(plan, None)]
        if plan.mode == "copy":
            attempts.append((reencode, None))
        attempts.append((reencode, float(pts[first])))
        failures: list[str] = []
        seek_failed = False
        try:
            while attempts:
                attempt, start_from = attempts.pop(0)
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
                bad_seek = SEEK_FAILED in proc.stderr
                problem = (
                    f"ffmpeg exited with {proc.returncode}: {proc.stderr.strip()[-STDERR_TAIL:]}"
                    if proc.returncode
                    else f"ffmpeg {SEEK_FAILED} {plan.seek_s if start_from is None else start_from:.6f}s"
                    if bad_seek
                    else self._check(tmp, pts, plan)
                )
                if not problem:
                    with open(tmp, "rb") as f:
                        os.fsync(f.fileno())
                    os.replace(tmp, final)
                    return
                if bad_seek and not seek_failed:
                    seek_failed = True
                    attempts.append((reencode, 0.0))  # 0.0: no input -ss (ffmpeg_args)
                label = (
                    "" if start_from is None else " (from the start)" if start_from == 0.0 else " (pre-roll)"
                )
                failures.append(f"{attempt.mode}{label}: {problem}")
            raise ValueError("; ".join(failures))
        finally:
            tmp.unlink(missing_ok=True)
