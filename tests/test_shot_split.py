"""Shot detection on generated videos with planted transitions (exact frames, no false positives)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from pipelines import shot_detect as sd
from pipelines.decode import decode_video, load_tiny
from pipelines.pixel_cuts import pixel_cuts
from pipelines.shot_eval import score_transitions
from pipelines.stages.shot_split import detect_transitions, make_shots
from samplegen.detection_suite import detection_suite

SUITE = ["suite_320x180_24", "suite_640x360_30", "suite_1280x720_25"]


@pytest.fixture(scope="module")
def model() -> object:
    from pipelines.transnet import TransNet

    return TransNet(threads=2)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, object, np.ndarray]]:
    root = tmp_path_factory.mktemp("suite")
    out = []
    for path, gt in detection_suite(root, SUITE):
        res = decode_video(str(path), tempfile.mkdtemp(dir=root))
        out.append((path, gt, np.asarray(load_tiny(res.frames))))
    return out


@pytest.mark.parametrize("i", range(len(SUITE)))
def test_default_detector_finds_every_planted_transition_exactly(suite: list, model: object, i: int) -> None:
    path, gt, frames = suite[i]
    trs, covered = detect_transitions(frames, "transnetv2", model, fps=gt.fps)
    s = score_transitions(trs, gt.cuts, [tuple(g) for g in gt.gradual])
    assert s.missed == [], f"{path.name}: missed {s.missed}"
    assert s.false_positives == [], f"{path.name}: false positives {s.false_positives}"
    assert s.kind_errors == 0
    # gradual transitions carry their span and kind
    for (a, b), kind in zip(gt.gradual, gt.gradual_kinds, strict=True):
        t = next(t for t in trs if max(t.start, a) < min(t.end, b))
        assert t.kind == kind and abs(t.start - a) <= 3 and abs(t.end - b) <= 3, (t, a, b, kind)
    # nothing is split inside a flash or a fast pan
    for a, b in gt.negatives:
        assert not [t for t in trs if a < t.start < b or (t.kind == "cut" and t.start == a)], (a, b, trs)
    # the cascade really skipped frames
    assert covered < 0.9


def test_cascade_agrees_with_full_transnet(suite: list, model: object) -> None:
    _, gt, frames = suite[1]
    fast, _ = detect_transitions(frames, "transnetv2", model, fps=gt.fps)
    full, covered = detect_transitions(frames, "transnetv2-full", model, fps=gt.fps)
    assert covered == 1.0
    assert [(t.start, t.end, t.kind) for t in fast] == [(t.start, t.end, t.kind) for t in full]


def test_short_shots_survive_and_shots_tile_the_video(suite: list, model: object) -> None:
    _, gt, frames = suite[0]
    trs, _ = detect_transitions(frames, "transnetv2", model, fps=gt.fps)
    pts = np.arange(len(frames)) / gt.fps
    shots = make_shots("v", trs, pts, len(frames) / gt.fps, "transnetv2", min_shot_frames=1)
    spans = [(s.start_frame, s.end_frame) for s in shots]
    assert len(spans) == len(gt.shots)
    # boundaries at hard cuts are exact; those next to a gradual transition within 3 frames
    for (a, b), (ga, gb) in zip(spans, gt.shots, strict=True):
        assert abs(a - ga) <= (0 if ga in gt.cuts or ga == 0 else 3), (a, ga)
        assert abs(b - gb) <= (0 if gb in gt.cuts or gb == gt.n_frames else 3), (b, gb)
    assert all(s.transition in ("start", "cut", "dissolve", "fade") for s in shots)
    for a, b in gt.short_shots:
        assert (a, b) in spans and b - a < 10


def test_pyscenedetect_alternative_runs_on_the_same_frames(suite: list) -> None:
    _, gt, frames = suite[1]
    trs, covered = detect_transitions(frames, "adaptive", None, fps=gt.fps)
    s = score_transitions(trs, gt.cuts, [])
    assert covered == 0.0 and s.found_cuts == len(gt.cuts)


def test_flash_is_not_a_cut_on_a_synthetic_sequence() -> None:
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 200, (27, 48, 3), dtype=np.uint8)
    frames = np.stack([scene] * 40)
    frames[20:22] = 255  # two white frames, then the same picture again
    diff = sd.frame_diff(frames)
    trs = [sd.Transition(20, 20, "cut", 0.9), sd.Transition(22, 22, "cut", 0.9)]
    assert sd.suppress_false_transitions(trs, frames, diff) == []
    other = rng.integers(0, 200, (27, 48, 3), dtype=np.uint8)
    frames[22:] = other  # a real cut into a different picture after the flash
    assert trs[1] in sd.suppress_false_transitions(trs, frames, sd.frame_diff(frames))


def test_shots_from_transitions_excludes_gradual_frames() -> None:
    trs = [sd.Transition(10, 10, "cut", 1.0), sd.Transition(30, 40, "dissolve", 0.9)]
    assert [(a, b) for a, b, _ in sd.shots_from_transitions(trs, 60)] == [(0, 10), (10, 30), (40, 60)]


def test_fade_in_at_the_start_and_fade_out_at_the_end_are_not_transitions() -> None:
    rng = np.random.default_rng(1)
    scene = rng.integers(60, 200, (27, 48, 3), dtype=np.uint8)
    ramp = [np.zeros_like(scene)] * 8 + [(scene * (k / 10)).astype(np.uint8) for k in range(1, 11)]
    frames = np.stack(ramp + [scene] * 30 + ramp[::-1])
    black, luma = sd.black_frames(frames)
    n = len(frames)
    trs = [sd.Transition(9, 18, "fade", 0.9), sd.Transition(30, 30, "cut", 0.9),
           sd.Transition(n - 17, n - 8, "fade", 0.9)]
    assert sd.drop_edge_fades(trs, black, luma) == [trs[1]]
    # without black at the ends nothing is dropped
    inner = np.stack([scene] * 10 + ramp[::-1] + ramp + [scene] * 10)
    assert sd.drop_edge_fades(trs[:2], *sd.black_frames(inner)) == trs[:2]


def _two_pictures(n: int = 40, at: int = 20, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 120, (27, 48, 3), dtype=np.uint8)  # two pictures of different colours
    b = rng.integers(100, 255, (27, 48, 3), dtype=np.uint8)
    return np.stack([a] * at + [b] * (n - at))


def test_pixel_cut_where_the_model_saw_nothing_but_not_on_an_exposure_jump() -> None:
    frames = _two_pictures()
    diff, hist = sd.frame_diff(frames), sd.color_histograms(frames)
    silent = np.zeros(len(frames), np.float32)
    assert [t.start for t in pixel_cuts(frames, diff, hist, silent)] == [20]
    # the model already found it: nothing extra
    found = silent.copy()
    found[19] = 0.9
    assert pixel_cuts(frames, diff, hist, found) == []
    # the same picture, twice as bright from frame 20 on: a jump in pixels and histogram, same structure
    pic = frames[0].astype(np.float32)
    bright = np.stack([pic] * 20 + [np.clip(pic * 2.0, 0, 255)] * 20).astype(np.uint8)
    d, h = sd.frame_diff(bright), sd.color_histograms(bright)
    assert pixel_cuts(bright, d, h, silent) == []
    unguarded = pixel_cuts(bright, d, h, silent, min_structure=0.0)
    assert [t.start for t in unguarded] == [20]  # the structure guard is what keeps it out


def test_pixel_cut_needs_an_isolated_jump_not_fast_motion() -> None:
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 255, (40, 27, 48, 3), dtype=np.uint8)  # every frame a new picture
    diff, hist = sd.frame_diff(noise), sd.color_histograms(noise)
    assert pixel_cuts(noise, diff, hist, np.zeros(40, np.float32)) == []


def test_slow_dissolve_from_a_long_many_hot_run() -> None:
    n = 60
    frames = _two_pictures(n, 30)
    diff, black = sd.frame_diff(frames), np.zeros(n, bool)
    single, many = np.zeros(n, np.float32), np.zeros(n, np.float32)
    many[22:36] = 0.7  # 14 frames of "inside a transition", the single-frame peak only 0.25
    single[29] = 0.25
    trs = sd.transitions_from_predictions(single, many, diff, black)
    assert [(t.start, t.end, t.kind) for t in trs] == [(22, 36, "dissolve")]
    single[29] = 0.1  # too little evidence
    assert sd.transitions_from_predictions(single, many, diff, black) == []
    many[22:36], many[22:27] = 0.0, 0.7  # too short a run
    single[24] = 0.3
    assert sd.transitions_from_predictions(single, many, diff, black) == []


def test_a_card_of_small_text_on_black_is_not_black() -> None:
    card = np.zeros((2, 27, 48, 3), np.uint8)
    card[1, 12:14, 20:25] = 200  # 10 bright pixels of 1,296: a line of small text
    black, _ = sd.black_frames(card)
    assert black.tolist() == [True, False]


def test_a_hard_cut_to_a_long_black_tail_is_kept_a_short_one_is_not() -> None:
    rng = np.random.default_rng(4)
    scene = rng.integers(60, 200, (27, 48, 3), dtype=np.uint8)
    for tail, kept in ((30, True), (5, False)):
        frames = np.stack([scene] * 40 + [np.zeros_like(scene)] * tail)
        black, luma = sd.black_frames(frames)
        cut = sd.Transition(40, 40, "cut", 0.9)
        assert (sd.drop_edge_fades([cut], black, luma, min_black_shot=25) == [cut]) is kept, tail
