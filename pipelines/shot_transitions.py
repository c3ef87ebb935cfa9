"""Shot transitions from a video's decoded 48x27 frames: the detectors behind ``split.detector``.

``detect_transitions`` runs one of DETECTORS over every frame; ``cascade_plan`` is what the default
cascade asks TransNetV2 to score (shared with pipelines/split_stream.py, which runs those windows
while the video decodes). The stage (pipelines/stages/shot_split.py) turns transitions into shots.
"""

from __future__ import annotations

import numpy as np

from pipelines import shot_detect as sd
from pipelines.pixel_cuts import decisive, drop_partial_changes, pixel_cuts
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
            prop, plan = cascade_plan(frames, diff, hist, cascade_context, gradual_context, black_luma)
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


# Predicted frames per TransNetV2 window on the cascade's hard-cut and gradual proposal ranges,
# the shortest that holds the range (pipelines/transnet.py fixed_windows): a hard-cut range is one
# abrupt frame padded by 4 (9 frames) or a few merged; a gradual range is a histogram peak padded
# by 16 (33 frames) or a few merged. The windows add ``cascade_context`` and ``gradual_context``
# frames each side. A 17-32 frame hard-cut range takes one 44-frame window instead of two of 28.
# Tried and left out, because the cascade then no longer equals 'transnetv2-full' on the planted
# suite (a dissolve's end moves by one frame; tests/test_shot_split.py): hard-cut lengths
# (16, 24, 32), gradual (34, 50, 64) or (50, 64), which would have cut the model's time on the dev
# set + a 5-min 720p file from 18.6 to 16.5 s (1 thread, bf16).
CUT_USEFUL = (16, 32)
GRADUAL_USEFUL = (50,)


def cascade_plan(
    frames: np.ndarray, diff: np.ndarray, hist: np.ndarray, cascade_context: int, gradual_context: int,
    black_luma: float = 20.0,
) -> tuple[sd.Proposals, list[tuple[list[tuple[int, int]], int, int]]]:
    """The cascade's proposals and what TransNetV2 scores: [(hard-cut ranges, cascade_context,
    CUT_USEFUL), (gradual ranges, gradual_context, GRADUAL_USEFUL)].

    A histogram peak inside a fade through black proposes nothing: ``add_fades`` makes that fade
    one transition from the black frames and their luma, absorbing whatever the model finds
    overlapping it, so the model's view there changes no transition. A transition next to the
    fade has its own peak outside it and is still proposed. Measured on the dev set + a 5-min
    720p file: 38 of 102 gradual ranges (the 5-min file's fades mostly) no longer run, and every
    video's transitions are the same as with them (model frames 14,062 -> 8,896; docs/data-engineers.md)."""
    black, luma = sd.black_frames(frames, black_luma)
    prop = sd.propose(frames, diff, hist, decided=decisive(frames, diff, hist),
                      explained=sd.fade_frames(black, luma))
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
