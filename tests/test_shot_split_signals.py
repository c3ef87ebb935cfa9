"""The split step's pixel signals on real frames (the committed Sintel excerpts, tests/data/real):
wipes and slides, UI-style partial changes, the fixed TransNetV2 windows and the pooling rewrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines import shot_detect as sd
from pipelines.decode import decode_video, load_tiny
from pipelines.pixel_cuts import drop_partial_changes, same_picture, unchanged_fraction
from pipelines.transnet import fixed_windows, useful_frames
from pipelines.wipes import find_wipes, fits_wipe

REAL = Path(__file__).resolve().parent / "data" / "real"


@pytest.fixture(scope="module")
def sintel(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    out = tmp_path_factory.mktemp("sintel")
    return np.asarray(load_tiny(decode_video(str(REAL / "sintel_cuts.mp4"), str(out / "d")).frames))


def steady(frame: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """n frames of one still picture with a little sensor noise."""
    return [np.clip(frame.astype(np.int16) + rng.integers(-1, 2, frame.shape), 0, 255).astype(np.uint8)
            for _ in range(n)]


def transition(a: np.ndarray, b: np.ndarray, kind: str, frames: int, axis: int) -> list[np.ndarray]:
    """A wipe or slide from a to b over ``frames`` frames along ``axis`` (1: columns, 0: rows)."""
    out = []
    length = a.shape[axis]  # rows for axis 0, columns for 1
    for i in range(1, frames + 1):
        p = round(length * i / (frames + 1))
        x, y = np.moveaxis(a, axis, 0), np.moveaxis(b, axis, 0)
        if kind == "wipe":
            f = np.concatenate([x[: length - p], y[length - p :]])
        else:
            f = np.concatenate([x[p:], y[:p]])
        out.append(np.moveaxis(f, 0, axis))
    return out


@pytest.mark.parametrize(("kind", "axis"), [("wipe", 1), ("slide", 1), ("wipe", 0), ("slide", 0)])
def test_a_wipe_or_slide_between_two_real_shots_is_one_gradual_transition(
    sintel: np.ndarray, kind: str, axis: int
) -> None:
    rng = np.random.default_rng(0)
    a, b = sintel[20], sintel[100]  # two different shots of the excerpt
    video = np.stack(steady(a, 30, rng) + transition(a, b, kind, 14, axis) + steady(b, 30, rng))
    found = find_wipes(video, sd.frame_diff(video), [])
    # frames 30-43 mix the shots; the first and last change only a strip of the frame
    assert len(found) == 1 and found[0].kind == "dissolve", found
    assert abs(found[0].start - 30) <= 1 and abs(found[0].end - 44) <= 1, found
    # already covered by another transition: not reported twice
    assert find_wipes(video, sd.frame_diff(video), [sd.Transition(31, 40, "dissolve", 0.9)]) == []


def test_a_pan_across_one_picture_is_not_a_slide(sintel: np.ndarray) -> None:
    """The camera pans over one wide picture (two shots side by side as a panorama): every frame is
    a window onto it, but the end pictures are not adjacent halves, so no wipe or slide fits."""
    wide = np.concatenate([sintel[20], sintel[100], sintel[60]], axis=1)  # 27 x 144
    video = np.stack([wide[:, x : x + 48] for x in [0] * 20 + list(range(0, 97, 6)) + [96] * 20])
    assert find_wipes(video, sd.frame_diff(video), []) == []
    assert not fits_wipe(video, 20, 36)


def test_ui_change_over_the_same_picture_is_not_a_cut(sintel: np.ndarray) -> None:
    """An 'overview' dims the picture and opens a panel over a third of it (a screencast's UI
    change); a window closes over an unchanged background. Neither replaces the picture; a cut
    between the excerpt's real shots does."""
    a = sintel[20]
    dimmed = (a.astype(np.float32) * 0.55).astype(np.uint8)
    dimmed[:, :16] = 40
    closed = a.copy()
    closed[6:20, 10:38] = 200  # a dialog box appears over a still picture
    for after in (dimmed, closed):
        video = np.stack([a, a, after, after])
        assert same_picture(video, 2) >= 0.25 or unchanged_fraction(video, 2) >= 0.3
        assert drop_partial_changes([sd.Transition(2, 2, "cut", 0.9)], video) == []
    cut = np.stack([sintel[29], sintel[30], sintel[31], sintel[32]])  # the excerpt's cut at 31
    assert same_picture(cut, 2) < 0.25 and unchanged_fraction(cut, 2) < 0.3
    kept = [sd.Transition(2, 2, "cut", 0.9), sd.Transition(1, 3, "dissolve", 0.9)]
    assert drop_partial_changes(kept, cut) == kept


def test_fixed_windows_cover_each_range_with_one_window_length() -> None:
    rng = np.random.default_rng(1)
    for _ in range(2000):
        n = int(rng.integers(1, 400))
        a = int(rng.integers(0, n))
        b = int(rng.integers(a + 1, n + 1))
        for useful in (useful_frames(8), useful_frames(25), (16, 24, 32), (34, 50, 64)):
            lengths = [min(u, n) for u in ((useful,) if isinstance(useful, int) else useful)]
            windows = fixed_windows([(a, b)], n, useful)
            # the shortest allowed length that holds the range, else the longest, for every window
            want = next((k for k in lengths if k >= b - a), lengths[-1])
            assert {k for _, k, _, _ in windows} == {want}
            assert len(windows) == -(-(b - a) // want)
            assert all(0 <= w <= s < e <= w + k <= n for w, k, s, e in windows)
            assert sorted(f for _, _, s, e in windows for f in range(s, e)) == list(range(a, b))


def test_half_pool_equals_avg_pool3d() -> None:
    torch = pytest.importorskip("torch")
    from pipelines.transnet import half_pool

    x = torch.randn(1, 16, 12, 27, 48)
    ref = torch.nn.functional.avg_pool3d(x, (1, 2, 2))
    assert torch.allclose(half_pool(torch)(x), ref, atol=1e-6)


def test_colour_histograms_count_every_pixel_once(sintel: np.ndarray) -> None:
    hist = sd.color_histograms(sintel)
    assert hist.shape == (len(sintel), 3 * sd.HIST_BINS)
    np.testing.assert_allclose(hist.reshape(len(sintel), 3, -1).sum(axis=2), 1.0, atol=1e-6)
    f = sintel[50]
    want = np.concatenate([np.bincount(f[..., c].ravel() // 16, minlength=16) for c in range(3)]) / (27 * 48)
    np.testing.assert_allclose(hist[50], want, atol=1e-7)


def fade_then_dissolve(sintel: np.ndarray) -> np.ndarray:
    """Three real shots: A fades through black into B (fade-out 30-59, black 60-67, fade-in
    68-97, each frame a little darker or brighter than the last: no abrupt frame), then B
    dissolves into C (128-147)."""
    rng = np.random.default_rng(1)
    a, b, c = (sintel[i].astype(np.float32) for i in (50, 100, 160))  # three different shots
    out = steady(sintel[50], 30, rng)
    out += [(a * (1 - i / 30)).astype(np.uint8) for i in range(1, 31)]
    out += [np.zeros_like(sintel[0])] * 8
    out += [(b * i / 30).astype(np.uint8) for i in range(1, 31)]
    out += steady(sintel[100], 30, rng)
    out += [(b * (1 - i / 21) + c * i / 21).astype(np.uint8) for i in range(1, 21)]
    out += steady(sintel[160], 30, rng)
    return np.stack(out)


def test_a_fade_through_black_proposes_no_model_window_but_a_dissolve_beside_it_does(
    sintel: np.ndarray,
) -> None:
    video = fade_then_dissolve(sintel)
    diff, hist = sd.frame_diff(video), sd.color_histograms(video)
    black, luma = sd.black_frames(video)
    fade = sd.fade_frames(black, luma)
    assert fade[30:98].all() and not fade[:29].any() and not fade[99:].any(), np.flatnonzero(fade)
    before = sd.propose(video, diff, hist).gradual
    after = sd.propose(video, diff, hist, explained=fade).gradual
    assert any(a <= 64 < b for a, b in before), before  # without the rule the fade takes a window
    assert not any(a <= 64 < b for a, b in after), after
    assert any(a <= 137 < b for a, b in after), after  # the dissolve keeps its range


def test_fades_through_black_skipped_by_the_cascade_give_the_same_transitions(
    sintel: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.shot_transitions import detect_transitions
    from pipelines.transnet import TransNet

    video = fade_then_dissolve(sintel)
    model = TransNet(threads=2)
    skipped, _ = detect_transitions(video, "transnetv2", model)
    monkeypatch.setattr(sd, "fade_frames", lambda black, luma: np.zeros(len(black), bool))
    every, _ = detect_transitions(video, "transnetv2", model)
    assert [(t.start, t.end, t.kind) for t in skipped] == [(t.start, t.end, t.kind) for t in every]
    fade, dissolve = skipped
    assert (fade.kind, fade.start, fade.end) == ("fade", 30, 97), skipped
    assert dissolve.kind == "dissolve" and 128 <= dissolve.start < dissolve.end <= 148, skipped
