"""Shot split stage: transitions from the decoded 48x27 frames, then Shot rows.

Detectors (``split.detector``):
    transnetv2       cascade: cheap proposals, TransNetV2 confirms (the default).
    transnetv2-full  TransNetV2 on every frame (the accuracy reference).
    adaptive/content PySceneDetect's AdaptiveDetector/ContentDetector fed the same
                     decoded frames (hard cuts only; no second decode).
All of them share the fade/flash post-processing in pipelines/shot_detect.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from curation.schema import Shot
from pipelines import shot_detect as sd
from pipelines.shot_transitions import DETECTORS, detect_transitions  # noqa: F401  (detect_transitions re-exported)
from pipelines.stage import Resources, Stage, unhashed, worker_cores
from pipelines.tasks import VideoTask
from pipelines.transnet import PRECISIONS


def make_shots(
    video_id: str,
    trs: list[sd.Transition],
    pts: np.ndarray,
    duration_s: float,
    detector: str,
    min_shot_frames: int,
) -> list[Shot]:
    """Shot rows with times taken from the frames' real timestamps (VFR-safe)."""
    n = len(pts)
    shots = []
    for i, (a, b, t) in enumerate(sd.shots_from_transitions(trs, n, min_shot_frames)):
        end_s = float(pts[b]) if b < n else duration_s
        shots.append(
            Shot(
                video_id=video_id,
                shot_index=i,
                start_frame=a,
                end_frame=b,
                start_s=float(pts[a]),
                end_s=end_s,
                detector=detector,
                transition="start" if t is None else t.kind,  # type: ignore[arg-type]
                transition_start=None if t is None else t.start,
                transition_end=None if t is None else t.end,
                transition_score=None if t is None else round(t.score, 4),
            )
        )
    return shots


@dataclass
class SplitConfig:
    """Shot detection.

    detector: 'transnetv2' (cascade: a cheap frame-difference proposer, TransNetV2
        confirms every proposal), 'transnetv2-full' (TransNetV2 on every frame),
        'adaptive' / 'content' (PySceneDetect, hard cuts only).
    """

    detector: str = "transnetv2"
    # TransNetV2 single-frame transition probability above which a transition event starts
    threshold: float = 0.5
    min_shot_frames: int = 1  # a shot shorter than this many frames is merged into the previous one
    flash_max_frames: int = 8  # A-[<=N frames]-A with A similar on both sides is not a cut
    cascade_context: int = 6  # TransNetV2 context frames each side of a hard-cut proposal's window
    gradual_context: int = 16  # ... of a gradual (dissolve/fade) proposal's window (full model: 25)
    black_luma: float = 20.0  # mean luma (0-255) below which a frame is black (fades)
    device: str = unhashed("cpu")  # 'cuda' runs TransNetV2 on a GPU
    # TransNetV2's arithmetic: 'auto' (on a CPU int8 spatial convolutions where it has int8 dot
    # products, else bf16 where native, else fp32; bf16 on CUDA), 'fp32', 'bf16', 'int8'
    precision: str = "auto"
    # Decode inside the shot-split worker, the cascade's TransNetV2 windows running while the video
    # decodes (pipelines/split_stream.py; same shots). False: Decode tasks, then ShotSplit actors.
    stream: bool = unhashed(True)

    # checked at load (pipelines/config_check.py): ranges (low, high, low exclusive; others >= 0)
    RANGES: ClassVar[dict[str, tuple[float | None, float | None, bool]]] = {
        "threshold": (0, 1, False), "min_shot_frames": (1, None, False), "black_luma": (0, 255, False)}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "detector": DETECTORS, "precision": PRECISIONS}


@dataclass
class ShotSplit(SplitConfig, Stage[VideoTask, VideoTask]):
    """Split a decoded video into shots: ``task.frames`` from the Decode stage before it, or, with
    ``decode`` set, decode the video here with the model's windows running alongside
    (``pipelines.split_stream.decode_and_detect``).

    A decoding worker still asks for one CPU: FFmpeg's threads and the model's window thread share
    it with the next worker's. Measured on the dev set + a 5-min 720p file (2 cores, ``vidloom
    bench curate --split-only``): two 1-CPU workers 38.9 s at 94% CPU, one 2-CPU worker 42.0 s
    at 83% (it decodes one video at a time)."""

    name: ClassVar[str] = "shot_split"
    version: ClassVar[int] = 1
    # One model per actor; torch uses the actor's cores for the convolutions.
    resources: ClassVar[Resources] = Resources(cpus=1.0, actors=True)

    decode: Any = field(default=None, compare=False)  # a Decode stage to run first, in this worker
    _model: object | None = field(default=None, init=False, repr=False, compare=False)


    def setup(self) -> None:
        if self.detector.startswith("transnetv2") and self._model is None:
            from pipelines.transnet import TransNet

            try:
                self._model = TransNet(device=self.device, precision=self.precision)
            except ValueError as e:  # the run's precision, resolved on the driver, is not for this node
                hint = "on a cluster of mixed CPUs set one every node runs"
                raise ValueError(f"{e} (split.precision {self.precision!r} is this run's, resolved "
                                 f"where it started: {hint})") from e

    def process(self, task: VideoTask) -> VideoTask:
        if self.decode is not None:
            return self._decode_and_split(task)
        if task.error or task.video is None or task.video.status != "ok" or task.frames is None:
            return task
        from pipelines.decode import load_timeline, load_tiny

        frames = load_tiny(task.frames)
        pts, _ = load_timeline(task.frames)
        fps = task.video.fps or 25.0
        trs, _ = detect_transitions(
            np.asarray(frames),
            self.detector,
            self._model,
            self.threshold,
            self.flash_max_frames,
            self.black_luma,
            fps,
            self.cascade_context,
            gradual_context=self.gradual_context,
        )
        duration = task.video.duration_s or (len(pts) / fps)
        task.shots = make_shots(task.video.video_id, trs, pts, duration, self.detector, self.min_shot_frames)
        return task

    def _decode_and_split(self, task: VideoTask) -> VideoTask:
        from pipelines.decode import DecodeError, load_timeline
        from pipelines.split_stream import decode_and_detect
        from pipelines.stages.decode_stage import record_decode

        video = task.video
        if task.error or video is None or video.status == "error":
            return task
        fps = video.fps or 25.0
        try:
            result, trs = decode_and_detect(
                task.path, self.decode.frames_dir(video.video_id), self._model, detector=self.detector,
                threshold=self.threshold, flash_max_frames=self.flash_max_frames, black_luma=self.black_luma,
                cascade_context=self.cascade_context, gradual_context=self.gradual_context, fps=fps,
                workers=worker_cores(), **self.decode.decode_args())
        except DecodeError as e:
            video.status, video.error = "error", str(e)
            return task
        record_decode(task, result)
        pts, _ = load_timeline(result.frames)
        duration = video.duration_s or (len(pts) / fps)
        task.shots = make_shots(video.video_id, trs, pts, duration, self.detector, self.min_shot_frames)
        return task
