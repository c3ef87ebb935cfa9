"""The generated demo and bad-input videos carry the ground truth they claim: checked on decoded frames."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from frame_checks import CUT_MIN, SHOT_MAX, decode, frame_diffs

from samplegen.cut_videos import Segment, _segment_frames, plan_ground_truth
from samplegen.samples import (
    CLIP_TRIM_FRAMES,
    MANIFEST,
    MAX_ASPECT,
    MAX_CLIP_S,
    MIN_CLIP_S,
    MIN_SIDE,
    REASON_ORDER,
    demo_plans,
    generate_bad_inputs,
    generate_demo_samples,
    plan_segments,
    segment_expect,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    directory = tmp_path_factory.mktemp("demo")
    return directory, generate_demo_samples(directory)


COPIES = ("duplicate", "remux_duplicate", "near_duplicate")


def test_demo_manifest_lists_every_file(demo: tuple[Path, dict]) -> None:
    directory, manifest = demo
    assert json.loads((directory / MANIFEST).read_text(encoding="utf-8")) == manifest
    assert sorted(manifest) == sorted(p.name for p in directory.iterdir() if p.name != MANIFEST)
    assert "街景 sample 01.mp4" in manifest
    for name, entry in manifest.items():
        if entry["kind"] != "corrupt":
            luma, _ = decode(directory / name)
            assert len(luma) == entry["n_frames"]
            assert luma.shape[1:] == (entry["height"], entry["width"])


def test_demo_cuts_and_static_shot_are_where_the_manifest_says(demo: tuple[Path, dict]) -> None:
    directory, manifest = demo
    for name, entry in manifest.items():
        if entry["kind"] != "video":
            continue
        d = frame_diffs(decode(directory / name)[0])
        assert not entry["cuts"] or d[entry["cuts"]].min() > CUT_MIN, name
        plain = [c for seg in entry["segments"] for c in range(seg["start"] + 1, seg["end"])]
        assert d[plain].max() < SHOT_MAX, name
    static = frame_diffs(decode(directory / "demo_static_480x270.mp4")[0])
    first, second = manifest["demo_static_480x270.mp4"]["cuts"]
    assert (second - first) / manifest["demo_static_480x270.mp4"]["fps"] >= 7
    assert static[first + 1 : second].max() < 3, "the long shot is almost still"


def test_demo_segments_follow_the_plans(demo: tuple[Path, dict]) -> None:
    _, manifest = demo
    for name, (width, height, fps, plan, _, _) in demo_plans().items():
        segments, shots = manifest[name]["segments"], plan_ground_truth(plan, width, height, fps).shots
        assert [(s["start"], s["end"]) for s in segments] == shots
        assert [(s["source"], s["effect"], s["text"]) for s in segments] == [
            (p.source, p.effect, p.text) for p in plan]
        assert [s["expect"] for s in segments] == [
            segment_expect(p, e - a, width, height, fps) for p, (a, e) in zip(plan, shots, strict=True)]
    for name, entry in manifest.items():
        if entry["kind"] in COPIES:
            original = manifest[entry["duplicate_of"]]["segments"]
            assert [s["expect"] for s in entry["segments"]] == [
                "duplicate" if s["expect"] == "kept" else s["expect"] for s in original], name
    # Every reason but too_long (clips are cut at most max_s long), too_fast, low_aesthetic and
    # compressed (the demo is rendered at crf 23; tests/test_artifacts.py crushes real footage).
    planted = {s["expect"] for entry in manifest.values() for s in entry.get("segments", [])}
    assert planted == {*REASON_ORDER, "kept"} - {"too_long", "too_fast", "low_aesthetic", "compressed"}


def test_segment_expect_takes_the_first_reason_in_decision_order() -> None:
    assert segment_expect(Segment("testsrc2_pan", 75), 75, 640, 360, 25) == "kept"
    assert segment_expect(Segment("testsrc2_pan", 20), 20, 640, 360, 25) == "too_short"
    assert segment_expect(Segment("testsrc2_pan", 75), 75, 96, 54, 25) == "low_resolution"
    assert segment_expect(Segment("smptebars", 75, effect="blur"), 75, 640, 360, 25) == "blurry"
    assert segment_expect(Segment("still", 75, text="HI"), 75, 640, 360, 25) == "text"
    white_box = Segment("mandelbrot_white", 75, effect="letterbox")
    assert segment_expect(white_box, 75, 640, 360, 25) == "overexposed"
    with pytest.raises(ValueError, match="no known status"):
        segment_expect(Segment("mandelbrot", 75), 75, 640, 360, 25)
    with pytest.raises(ValueError, match="unknown effect"):
        plan_ground_truth([Segment("testsrc2", 20, effect="sepia")], 64, 36, 24)


def test_expectations_mirror_the_tiny_preset_and_the_decision_order() -> None:
    from pipelines.config import tiny
    from pipelines.decide import REASONS

    clips, filters = tiny().clips, tiny().filters
    assert (clips.min_s, filters.min_duration_s, clips.max_s) == (MIN_CLIP_S, MIN_CLIP_S, MAX_CLIP_S)
    assert clips.trim_start_frames + clips.trim_end_frames == CLIP_TRIM_FRAMES
    assert (filters.min_width, filters.min_height, filters.max_aspect) == (MIN_SIDE, MIN_SIDE, MAX_ASPECT)
    not_planted = ("extract_error", "caption_check", "no_caption")  # pipeline failures, not content
    assert REASON_ORDER == tuple(r for r in REASONS if r not in not_planted)


def test_every_clip_of_a_shot_shares_its_fate() -> None:
    """Tiny-preset clips of each shot, its bounds detected up to 2 frames off: a kept shot is one
    clip (clips of one shot would be near-duplicates of each other), a too-short shot one short
    clip, any other shot only clips of at least the minimum length."""
    from pipelines.clip_spans import clip_spans
    from pipelines.config import tiny

    c = tiny().clips
    for name, (width, height, fps, plan, _, _) in demo_plans().items():
        for seg in plan_segments(plan, width, height, fps):
            for da, de in itertools.product((-2, 0, 2), repeat=2):
                spans = clip_spans(seg["start"] + da, seg["end"] + de, fps, c.min_s, c.max_s, c.stride_s,
                                   c.trim_start_frames, c.trim_end_frames)
                seconds = [(b - a) / fps for a, b in spans]
                if seg["expect"] == "too_short":
                    assert len(spans) == 1 and seconds[0] < c.min_s, (name, seg)
                else:
                    assert min(seconds) >= c.min_s, (name, seg, spans)
                if seg["expect"] == "kept":
                    assert len(spans) == 1, (name, seg, spans)


def _shot(luma: np.ndarray, seg: dict) -> np.ndarray:
    """The shot's frames as float32, less one frame at each end."""
    return luma[seg["start"] + 1 : seg["end"] - 1].astype(np.float32)


def _sharpness(frames: np.ndarray) -> float:
    return float(np.median([cv2.Laplacian(f, cv2.CV_32F).var() for f in frames[::8]]))


def test_planted_defects_are_in_the_decoded_frames(demo: tuple[Path, dict]) -> None:
    directory, manifest = demo
    name = "demo_defects_640x360.mp4"
    entry = manifest[name]
    luma = decode(directory / name)[0]
    shots = {seg["effect"] or seg["expect"]: _shot(luma, seg) for seg in entry["segments"]}
    clean = [_shot(luma, seg) for seg in entry["segments"] if seg["expect"] == "kept"]
    assert len(clean) == 2
    sharp = min(_sharpness(f) for f in clean)

    assert _sharpness(shots["blur"]) < sharp / 20, "the blur leaves no edge"
    dark = shots["dark"]
    assert 20 < dark.mean() < 40, "dark, not black"
    assert dark.std(axis=(1, 2)).min() > 4, "the scene stays visible"
    bar = round(entry["height"] * 0.14 / 2) * 2
    box = shots["letterbox"]
    assert box[:, : bar - 2].max() <= 8 and box[:, -(bar - 2) :].max() <= 8, "black bars top and bottom"
    assert box[:, bar + 2 : -bar - 2].mean(axis=(1, 2)).min() > 40, "the picture between them"
    held = np.abs(np.diff(shots["frozen"], axis=0)).mean(axis=(1, 2))
    assert held.max() < 0.05, "a held frame decodes (almost) identically"
    assert shots["black"].max() <= 2
    for frames in clean:
        assert 40 < frames.mean() < 220
        assert np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2)).min() > 1, "clean shots move"

    # The frozen effect holds the very same frame: identical bytes before the encoder.
    plan = demo_plans()[name][3]
    seg = next(s for s in plan if s.effect == "frozen")
    raw = list(_segment_frames(dataclasses.replace(seg, frames=6), 64, 36, 25, seg.seed))
    assert all(np.array_equal(raw[0], f) for f in raw[1:])


def test_still_shot_changes_but_does_not_move(demo: tuple[Path, dict]) -> None:
    directory, manifest = demo
    entry = manifest["demo_static_480x270.mp4"]
    seg = next(s for s in entry["segments"] if s["source"] == "still")
    still = _shot(decode(directory / "demo_static_480x270.mp4")[0], seg)
    assert np.abs(still - still[0]).mean(axis=(1, 2)).max() < 2, "no drift: the same picture throughout"
    assert (np.abs(np.diff(still, axis=0)).max(axis=(1, 2)) > 0).all(), "grain: no two frames alike"


def test_quality_scores_give_the_expected_reasons(demo: tuple[Path, dict], tmp_path: Path) -> None:
    """pipelines.quality on each shot's clip (as the quality scorer measures it) rejects it for
    the expected reason; text and motion are not measured here, so 'text' and 'static' shots
    may pass and clean shots must."""
    from pipelines import quality
    from pipelines.clip_frames import luma as rgb_luma
    from pipelines.config import tiny
    from pipelines.decide import reject_reason
    from pipelines.decode import decode_video
    from pipelines.shot_detect import black_frames

    cfg = tiny()
    for name, entry in demo[1].items():
        if entry["kind"] != "video":
            continue
        fs = decode_video(str(demo[0] / name), str(tmp_path / f"frames{len(name)}{entry['n_frames']}")).frames
        tiny_frames = np.load(Path(fs.dir) / "tiny.npy")
        sparse, idx = np.load(Path(fs.dir) / "sparse.npy"), np.load(Path(fs.dir) / "sparse_idx.npy")
        for seg in entry["segments"]:
            a, b = seg["start"] + 1, seg["end"] - 1
            frames = sparse[(idx >= a) & (idx < b)]
            lumas = rgb_luma(frames)
            black, _ = black_frames(frames)
            box = quality.bar_box(lumas, black)
            picture = quality.inside(lumas, box)
            row = {"start_s": a / entry["fps"], "end_s": b / entry["fps"], "width": entry["width"],
                   "height": entry["height"], "blur": quality.blur_score(lumas, box),
                   "luma": float(picture.mean()),
                   "clipped": quality.clipped_fraction(picture), "black_frac": float(black.mean()),
                   "black_border": 1 - box.w * box.h / (lumas.shape[1] * lumas.shape[2]),
                   "frozen": quality.frozen_fraction(tiny_frames[a:b])}
            got = reject_reason(row, cfg.filters) or "kept"
            allowed = {"text": {"kept"}, "static": {"kept"}}.get(seg["expect"], set()) | {seg["expect"]}
            assert got in allowed, (name, seg, got, row)


def test_clean_shots_differ_and_copies_are_duplicates(demo: tuple[Path, dict], tmp_path: Path) -> None:
    """Perceptual hashes (pipelines.dedup) of every clip a video keeps: no two clean shots are
    near-duplicates, each copy's clip is one of its original's, the remux has the same content hash."""
    from pipelines.config import FilterConfig
    from pipelines.decode import decode_video
    from pipelines.dedup import clip_phash, content_hash, parse_phash, phash_distance_matrix

    directory, manifest = demo
    limit = FilterConfig().phash_max_distance
    clips: list[tuple[str, int, np.ndarray, str]] = []  # (original file, shot, phash, content hash)
    for name, entry in manifest.items():
        if entry["kind"] not in ("video", "remux_duplicate", "near_duplicate"):
            continue
        fs = decode_video(str(directory / name), str(tmp_path / f"frames{len(clips)}")).frames
        tiny_frames = np.load(Path(fs.dir) / "tiny.npy")
        sparse, idx = np.load(Path(fs.dir) / "sparse.npy"), np.load(Path(fs.dir) / "sparse_idx.npy")
        for i, seg in enumerate(entry["segments"]):
            if seg["expect"] in ("kept", "duplicate"):
                a, b = seg["start"] + 1, seg["end"] - 1
                phash = parse_phash(clip_phash(sparse[(idx >= a) & (idx < b)]))
                clips.append((entry.get("duplicate_of", name), i, phash, content_hash(tiny_frames[a:b])))
    dist = phash_distance_matrix([c[2] for c in clips])
    for i, j in itertools.combinations(range(len(clips)), 2):
        same = clips[i][:2] == clips[j][:2]
        assert (dist[i, j] <= limit) == same, (clips[i][:2], clips[j][:2], dist[i, j])
    # The original's clips, then the remux's, then the re-encode's (manifest order).
    hashes = [c[3] for c in clips if c[0] == "demo_cuts_640x360.mp4"]
    kept = len(hashes) // 3
    assert hashes[:kept] == hashes[kept : 2 * kept], "the remux decodes to the very same frames"
    assert not set(hashes[:kept]) & set(hashes[2 * kept :]), "the re-encode does not"


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

    remux = directory / "demo_cuts_remux.mkv"
    assert remux.read_bytes() != original
    with av.open(str(remux)) as container:
        assert "matroska" in container.format.name and container.streams.audio
    assert np.array_equal(decode(remux)[0], decode(directory / "demo_cuts_640x360.mp4")[0])

    with pytest.raises(av.error.FFmpegError):
        with av.open(str(directory / "demo_corrupt.mp4")) as container:
            next(container.decode(video=0))


def test_demo_generation_is_idempotent(demo: tuple[Path, dict]) -> None:
    directory, manifest = demo
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    assert generate_demo_samples(directory) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir() if p.name != MANIFEST} == {
        n: t for n, t in before.items() if n != MANIFEST}


def test_demo_generation_is_deterministic(demo: tuple[Path, dict], tmp_path: Path) -> None:
    """A rendered video and every derived file (copy, remux, re-encode, corrupt), made again,
    have the same bytes."""
    directory, manifest = demo
    redo = {"demo_defects_640x360.mp4", "demo_cuts_copy.mp4", "demo_cuts_remux.mkv",
            "demo_cuts_near_dup_480x270.mp4", "demo_corrupt.mp4", MANIFEST}
    for path in directory.iterdir():
        if path.name not in redo:
            shutil.copyfile(path, tmp_path / path.name)
    assert generate_demo_samples(tmp_path) == manifest
    for path in directory.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


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
    out = subprocess.run([sys.executable, "-m", "samplegen.samples", "bad", str(tmp_path)],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    assert sorted(json.loads(out.stdout)) == sorted(
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.mp4"))
