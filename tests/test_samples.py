"""The generated videos carry the ground truth they claim: checked on decoded frames."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from vidloom.cut_videos import (
    SUITE,
    GroundTruth,
    Segment,
    detection_suite,
    make_transition_video,
    plan_ground_truth,
    suite_plan,
)
from vidloom.samples import generate_bad_inputs, generate_demo_samples

CUT_MIN = 30.0  # mean |dY| (0-255) across a planted hard cut is above this
SHOT_MAX = 12.0  # and between consecutive frames of one plain shot below this

PLAN = [
    Segment("testsrc2", 20),
    Segment("mandelbrot", 24, flash=(8, 2)),
    Segment("life", 6),
    Segment("smptebars", 20),
    Segment("gradients", 20, enter="dissolve", transition=6),
    Segment("noise", 24, enter="fade", transition=4, black=3),
    Segment("testsrc2", 30, pan=(10, 8)),
]


def decode(path: Path) -> tuple[np.ndarray, list[bool]]:
    """All frames as full-range luma, (N, H, W) int16, and each frame's keyframe flag."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = list(container.decode(stream))
    luma = np.stack([f.to_ndarray(format="gray") for f in frames]).astype(np.int16)
    return luma, [f.key_frame for f in frames]


def frame_diffs(luma: np.ndarray) -> np.ndarray:
    """d[c] = mean |Y[c] - Y[c-1]|; d[0] = 0."""
    return np.concatenate([[0.0], np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))])


def check_against_frames(path: Path, gt: GroundTruth) -> None:
    luma, _ = decode(path)
    assert len(luma) == gt.n_frames
    assert luma.shape[1:] == (gt.height, gt.width)
    d = frame_diffs(luma)
    assert d[gt.cuts].min() > CUT_MIN, d[gt.cuts]
    inside_negative = {c for a, b in gt.negatives for c in range(a, b)}
    plain = [c for a, b in gt.shots for c in range(a + 1, b) if c not in inside_negative]
    # A cut planted one frame early or late would put a large jump into `plain`.
    assert d[plain].max() < SHOT_MAX
    for (a, b), kind in zip(gt.gradual, gt.gradual_kinds, strict=True):
        if kind == "dissolve":
            hard_jump = np.abs(luma[b] - luma[a - 1]).mean()
            assert d[a : b + 1].max() < hard_jump / 2, f"the dissolve at {a} changes step by step"
        else:
            means = luma[a - 1 : b + 1].mean(axis=(1, 2))  # clean frame, fade, clean frame
            black = np.flatnonzero(means < 3)
            assert len(black) >= 1, f"the fade at {a} passes through black"
            assert np.all(np.diff(means[: black[0] + 1]) < 0) and np.all(np.diff(means[black[-1] :]) > 0)
    for (a, b), kind in zip(gt.negatives, gt.negative_kinds, strict=True):
        if kind == "flash":
            assert luma[a : b - 1].mean() > 190 and d[a] > CUT_MIN and d[b - 1] > CUT_MIN
            assert np.abs(luma[b - 1] - luma[a - 1]).mean() < SHOT_MAX, "the same scene resumes"
        else:
            assert np.median(d[a:b]) > 2 * SHOT_MAX, "a fast pan moves a lot every frame"


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


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    directory = tmp_path_factory.mktemp("demo")
    return directory, generate_demo_samples(directory)


def test_demo_manifest_lists_every_file(demo: tuple[Path, dict]) -> None:
    directory, manifest = demo
    assert json.loads((directory / "samples.json").read_text(encoding="utf-8")) == manifest
    assert sorted(manifest) == sorted(p.name for p in directory.glob("*.mp4"))
    assert "街景 sample 01.mp4" in manifest
    for name, entry in manifest.items():
        if entry["kind"] in ("video", "duplicate", "near_duplicate"):
            luma, _ = decode(directory / name)
            assert len(luma) == entry["n_frames"]
            assert luma.shape[1:] == (entry["height"], entry["width"])


def test_demo_cuts_and_static_shot_are_where_the_manifest_says(demo: tuple[Path, dict]) -> None:
    directory, manifest = demo
    for name in ("demo_cuts_640x360.mp4", "demo_static_480x270.mp4"):
        d = frame_diffs(decode(directory / name)[0])
        cuts = manifest[name]["cuts"]
        assert d[cuts].min() > CUT_MIN
        assert np.delete(d, [0, *cuts]).max() < SHOT_MAX
    static = frame_diffs(decode(directory / "demo_static_480x270.mp4")[0])
    first, second = manifest["demo_static_480x270.mp4"]["cuts"]
    assert (second - first) / manifest["demo_static_480x270.mp4"]["fps"] >= 12
    assert static[first + 1 : second].max() < 3, "the long shot is almost still"


def test_demo_duplicates_and_corrupt_file(demo: tuple[Path, dict]) -> None:
    directory, manifest = demo
    original = (directory / "demo_cuts_640x360.mp4").read_bytes()
    assert (directory / "demo_cuts_copy.mp4").read_bytes() == original
    near = directory / "demo_cuts_near_dup_480x270.mp4"
    assert hashlib.sha256(near.read_bytes()).digest() != hashlib.sha256(original).digest()

    def thumbs(path: Path) -> np.ndarray:
        with av.open(str(path)) as container:
            return np.stack([f.reformat(48, 27, "gray").to_ndarray() for f in container.decode(video=0)])

    a, b = thumbs(directory / "demo_cuts_640x360.mp4").astype(np.int16), thumbs(near).astype(np.int16)
    assert a.shape == b.shape and np.abs(a - b).mean() < 4, "same content, frame for frame"

    with pytest.raises(av.error.FFmpegError):
        with av.open(str(directory / "demo_corrupt.mp4")) as container:
            next(container.decode(video=0))


def test_demo_generation_is_idempotent(demo: tuple[Path, dict]) -> None:
    directory, manifest = demo
    before = {p.name: p.stat().st_mtime_ns for p in directory.glob("*.mp4")}
    assert generate_demo_samples(directory) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in directory.glob("*.mp4")} == before


def test_bad_inputs_are_what_they_claim(tmp_path: Path) -> None:
    described = generate_bad_inputs(tmp_path)
    assert sorted(described) == sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.mp4"))
    assert (tmp_path / "empty.mp4").stat().st_size == 0
    for name in ("empty.mp4", "corrupt_bytes.mp4"):
        with pytest.raises(av.error.FFmpegError):
            av.open(str(tmp_path / name))
    with av.open(str(tmp_path / "audio_only.mp4")) as container:
        assert not container.streams.video and container.streams.audio
    with av.open(str(tmp_path / "png_image.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "png"

    def frames(name: str) -> list[av.VideoFrame]:
        with av.open(str(tmp_path / name)) as container:
            return list(container.decode(video=0))

    odd = frames("odd_97x55_yuv444.mp4")[0]
    assert (odd.width, odd.height) == (97, 55)
    assert abs(frames("rotated_90.mp4")[0].rotation) == 90
    steps = np.diff([float(f.time) for f in frames("vfr.mp4")])
    assert steps.min() > 0 and steps.max() > 2 * steps.min()
    assert frames("absurd_2x2.mp4")[0].width == 2
    assert frames("absurd_10h_gap.mp4")[-1].time >= 36000
    assert len(frames("single_frame.mp4")) == 1
    assert len(frames("vidéo 测试 file.mp4")) == len(frames("nested/deeper/nested_clip.mp4")) == 50

    decoded = 0
    with pytest.raises(av.error.FFmpegError):
        with av.open(str(tmp_path / "truncated_half.mp4")) as container:
            for _ in container.decode(video=0):
                decoded += 1
    assert 0 < decoded < 100, "the header survives, the second half of the frames does not"


def test_cli_writes_bad_inputs(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "vidloom.samples", "bad", str(tmp_path)],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    assert sorted(json.loads(out.stdout)) == sorted(
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.mp4"))
