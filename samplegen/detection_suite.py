"""The shot-detection suite: videos holding every planted event kind, with exact ground truth.

Three sizes and frame rates (``SUITE``), each rendered from :func:`suite_plan` by
:func:`samplegen.cut_videos.make_transition_video`; ``<name>.json`` beside each video holds its
:class:`~samplegen.cut_videos.GroundTruth`, and a video whose json matches its plan is reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from samplegen.cut_videos import GroundTruth, Segment, make_transition_video, plan_ground_truth


def write_ground_truth(video: Path, gt: GroundTruth) -> Path:
    """Write ``gt`` as ``<video stem>.json`` beside the video (atomically)."""
    out = video.with_suffix(".json")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(gt.to_json(), encoding="utf-8")
    tmp.replace(out)
    return out


# name -> (width, height, fps) of the detection suite.
SUITE: dict[str, tuple[int, int, float]] = {
    "suite_320x180_24": (320, 180, 24),
    "suite_640x360_30": (640, 360, 30),
    "suite_1280x720_25": (1280, 720, 25),
}


def suite_plan(fps: float, variant: int = 0) -> list[Segment]:
    """About 27 s of shots holding every planted event kind; ``variant`` varies lengths and seeds."""

    def s(seconds: float) -> int:
        return max(1, round(seconds * fps))

    v = variant
    return [
        Segment("testsrc2", s(2.5 + 0.5 * v)),
        Segment("mandelbrot", s(3.5), flash=(s(1.5), 2)),
        Segment("life", 6 + v, seed=v),  # a very short real shot
        Segment("smptebars", s(2.5)),
        Segment("gradients", s(3.0), enter="dissolve", transition=s(0.5), seed=v),
        Segment("mandelbrot_white", s(2.5 - 0.3 * v)),
        Segment("noise", s(3.0), enter="fade", transition=s(0.4), black=3 + v, seed=v),
        Segment("testsrc2", s(3.0), pan=(s(1.0), 12)),
        Segment("rgbtestsrc", s(2.0 + 0.2 * v), flash=(s(0.8), 3)),
        Segment("mandelbrot_outz", s(3.0), enter="dissolve", transition=s(0.8)),
        Segment("life", s(2.5), seed=v + 7),
    ]


def detection_suite(
    directory: str | Path, names: Sequence[str] | None = None
) -> list[tuple[Path, GroundTruth]]:
    """Render the shot-detection suite (``SUITE``) into ``directory``, each with ``<name>.json``.

    A video whose json already matches its plan is not rendered again. ``names`` picks a
    subset of ``SUITE``.
    """
    directory = Path(directory)
    out: list[tuple[Path, GroundTruth]] = []
    for variant, (name, (width, height, fps)) in enumerate(SUITE.items()):
        if names is not None and name not in names:
            continue
        path = directory / f"{name}.mp4"
        plan = suite_plan(fps, variant)
        gt = plan_ground_truth(plan, width, height, fps)
        json_path = path.with_suffix(".json")
        cached = json_path.read_text(encoding="utf-8") if json_path.exists() else None
        if not (path.exists() and cached == gt.to_json()):
            gt = make_transition_video(path, width, height, fps, plan, seed=variant)
            write_ground_truth(path, gt)
        out.append((path, gt))
    return out
