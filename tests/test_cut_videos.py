"""Planted-transition videos and the detection suite carry the ground truth they claim."""

from __future__ import annotations

from pathlib import Path

import pytest
from frame_checks import check_against_frames, decode

from samplegen.cut_videos import GroundTruth, Segment, make_transition_video, plan_ground_truth
from samplegen.detection_suite import SUITE, detection_suite, suite_plan

PLAN = [
    Segment("testsrc2", 20),
    Segment("mandelbrot", 24, flash=(8, 2)),
    Segment("life", 6),
    Segment("smptebars", 20),
    Segment("gradients", 20, enter="dissolve", transition=6),
    Segment("noise", 24, enter="fade", transition=4, black=3),
    Segment("testsrc2", 30, pan=(10, 8)),
]




def test_plan_ground_truth_counts_every_kind_of_transition() -> None:
    gt = plan_ground_truth(PLAN, 160, 90, 24)
    assert gt.cuts == [20, 44, 50, 111]
    assert gt.gradual == [(64, 70), (80, 91)] and gt.gradual_kinds == ["dissolve", "fade"]
    assert gt.negatives == [(28, 31), (121, 129)] and gt.negative_kinds == ["flash", "motion"]
    assert gt.short_shots == [(44, 50)]
    assert gt.n_frames == 141 == gt.shots[-1][1]
    assert GroundTruth.from_json(gt.to_json()) == gt


def test_plan_rejects_events_that_overlap_a_transition() -> None:
    with pytest.raises(ValueError, match="flash"):
        plan_ground_truth([Segment("testsrc2", 20), Segment("life", 20, "dissolve", 6, flash=(2, 2))],
                          64, 36, 24)
    with pytest.raises(ValueError, match="clean frame"):
        plan_ground_truth([Segment("testsrc2", 5), Segment("life", 20, "dissolve", 6)], 64, 36, 24)


def test_transition_video_matches_ground_truth_and_is_deterministic(tmp_path: Path) -> None:
    first = tmp_path / "a.mp4"
    gt = make_transition_video(first, 160, 90, 24, PLAN)
    assert gt == plan_ground_truth(PLAN, 160, 90, 24)
    check_against_frames(first, gt)
    _, keyframes = decode(first)
    assert not any(keyframes[c] for c in gt.cuts), "cuts fall between keyframes"

    second = tmp_path / "b.mp4"
    make_transition_video(second, 160, 90, 24, PLAN)
    assert first.read_bytes() == second.read_bytes()


def test_every_suite_plan_holds_every_event_kind() -> None:
    for variant, (_, (width, height, fps)) in enumerate(SUITE.items()):
        gt = plan_ground_truth(suite_plan(fps, variant), width, height, fps)
        assert 20 <= gt.n_frames / fps <= 40
        assert len(gt.cuts) >= 3
        assert {"dissolve", "fade"} <= set(gt.gradual_kinds)
        assert {"flash", "motion"} <= set(gt.negative_kinds)
        assert any(5 <= b - a <= 8 for a, b in gt.short_shots)


def test_detection_suite_video_matches_its_json(tmp_path: Path) -> None:
    name = "suite_320x180_24"
    [(path, gt)] = detection_suite(tmp_path, names=[name])
    assert GroundTruth.from_json((tmp_path / f"{name}.json").read_text()) == gt
    check_against_frames(path, gt)
    mtime = path.stat().st_mtime_ns
    detection_suite(tmp_path, names=[name])
    assert path.stat().st_mtime_ns == mtime, "a cached suite video is not rendered again"
