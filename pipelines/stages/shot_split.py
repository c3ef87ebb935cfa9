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
from pipelines.pixel_cuts import decisive, drop_partial_changes, pixel_cuts
from pipelines.stage import Resources, Stage, unhashed
from pipelines.tasks import VideoTask
from pipelines.wipes import find_wipes

DETECTORS = ("transnetv2", "transnetv2-full", "adaptive", "content")


def detect_transitions(
    frames: np.ndarray,
    detector: str,
    model: object | None = None,
    threshold: float = 0.5,
    flash_max_frames: int = 8,
    black_luma: float = 20.0,
    fps: float = 25.0,
    cascade_context: int = 6,
    *,
    gradual_context: int = 16,
    diff: np.ndarray | None = None,
    hist: np.ndarray | None = None,
) -> tuple[list[sd.Transition], float]:
    """All transitions in a video's tiny frames, and the fraction of frames the model scored.

    Args:
        frames: uint8 [N, 27, 48, 3] RGB.
        detector: one of DETECTORS.
        model: a loaded pipelines.transnet.TransNet for the TransNetV2 detectors.
        cascade_context: TransNetV2 context frames each side of the cascade's windows on
            hard-cut proposal ranges; ``gradual_context`` the same on gradual ones, which need
            a wider view of a dissolve ('transnetv2-full' keeps the reference 25). Calibrated
            on the dev set and the planted-transition suite: 8/25 -> 6/16 keeps every
            transition matched on both and the cascade equal to 'transnetv2-full' on the
            suite (three dev-set dissolve spans move by 1-3 frames), with 15% fewer model
            frames (7,196 -> 6,082). 4 on hard cuts moved a planted dissolve's start.
        diff, hist: ``sd.frame_diff(frames)`` and ``sd.color_histograms(frames)`` when already
            computed (pipelines/split_stream.py computes them while the video decodes).
    """
    diff = sd.frame_diff(frames) if diff is None else diff
    hist = sd.color_histograms(frames) if hist is None else hist
    black, luma = sd.black_frames(frames, black_luma)
    if detector in ("transnetv2", "transnetv2-full"):
        assert model is not None, "TransNetV2 detectors need a loaded model"
        if detector == "transnetv2-full":
            preds = model.predict(frames, None, 25)  # type: ignore[attr-defined]
            covered = 1.0
        else:
            prop, plan = cascade_plan(frames, diff, hist, cascade_context, gradual_context)
            on_cuts, on_gradual = (model.predict(frames, r, c, useful=u)  # type: ignore[attr-defined]
                                   for r, c, u in plan)
            preds = on_cuts.merged(on_gradual)
            covered = prop.coverage(len(frames))
        trs = sd.transitions_from_predictions(preds.single, preds.many, diff, black, threshold)
        extra = pixel_cuts(frames, diff, hist, preds.single, threshold)
        trs = sorted(trs + [c for c in extra if not any(t.start - 2 <= c.start <= t.end + 2 for t in trs)],
                     key=lambda t: t.start)
        trs = sorted(trs + find_wipes(frames, diff, trs), key=lambda t: t.start)
    elif detector in ("adaptive", "content"):
        trs = [sd.Transition(c, c, "cut", 1.0) for c in pyscenedetect_cuts(frames, detector, fps)]
        covered = 0.0
    else:
        raise ValueError(f"unknown detector {detector!r}; choose from {DETECTORS}")
    trs = sd.drop_edge_fades(sd.add_fades(trs, black, luma), black, luma, max(2, round(fps)))
    trs = drop_partial_changes(trs, frames)
    return sd.suppress_false_transitions(trs, frames, diff, flash_max_frames), covered


# Predicted frames per TransNetV2 window on the cascade's hard-cut and gradual proposal ranges:
# a hard-cut range is one abrupt frame padded by 4 (9 frames) or a few merged; a gradual range is
# a histogram peak padded by 16 (33 frames). The windows add ``cascade_context`` and
# ``gradual_context`` frames each side (pipelines/transnet.py fixed_windows).
CUT_USEFUL = 16
GRADUAL_USEFUL = 50


def cascade_plan(
    frames: np.ndarray, diff: np.ndarray, hist: np.ndarray, cascade_context: int, gradual_context: int
) -> tuple[sd.Proposals, list[tuple[list[tuple[int, int]], int, int]]]:
    """The cascade's proposals and what TransNetV2 scores: [(hard-cut ranges, cascade_context,
    CUT_USEFUL), (gradual ranges, gradual_context, GRADUAL_USEFUL)]."""
    prop = sd.propose(frames, diff, hist, decided=decisive(frames, diff, hist))
    return prop, [(prop.cuts, cascade_context, CUT_USEFUL), (prop.gradual, gradual_context, GRADUAL_USEFUL)]


def pyscenedetect_cuts(frames: np.ndarray, detector: str, fps: float) -> list[int]:
    """Cut frames from PySceneDetect run over already-decoded frames."""
    from scenedetect import AdaptiveDetector, ContentDetector
    from scenedetect.common import FrameTimecode

    det = AdaptiveDetector(min_scene_len=1) if detector == "adaptive" else ContentDetector(min_scene_len=1)
    cuts: list[int] = []
    for i, f in enumerate(frames):
        cuts += [int(tc.frame_num) for tc in det.process_frame(FrameTimecode(i, fps=fps), f[:, :, ::-1])]
    if hasattr(det, "post_process"):
        cuts += [int(tc.frame_num) for tc in det.post_process(FrameTimecode(len(frames), fps=fps))]
    return sorted(set(c for c in cuts if 0 < c < len(frames)))


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
    precision: str = "auto"  # TransNetV2 autocast: 'auto' (bf16 where native), 'fp32', 'bf16'
    # Decode inside the shot-split worker, the cascade's TransNetV2 windows running while the video
    # decodes (pipelines/split_stream.py; same shots). False: Decode tasks, then ShotSplit actors.
    stream: bool = unhashed(True)

    # checked at load (pipelines/config_check.py): ranges (low, high, low exclusive; others >= 0)
    RANGES: ClassVar[dict[str, tuple[float | None, float | None, bool]]] = {
        "threshold": (0, 1, False), "min_shot_frames": (1, None, False), "black_luma": (0, 255, False)}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "detector": DETECTORS, "precision": ("auto", "fp32", "bf16")}


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

            self._model = TransNet(device=self.device, precision=self.precision)

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
        from pipelines.split_stream import decode_and_detect, worker_cores
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
