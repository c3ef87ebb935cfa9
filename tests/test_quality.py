"""Quality scores: bars, blur, brightness, black and frozen frames, on synthetic and encoded frames."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from curation.schema import Clip, ClipScores
from pipelines.clip_frames import luma
from pipelines.decode import decode_video
from pipelines.quality import Box, bar_box, blur_score, clipped_fraction, frozen_fraction, source_box
from pipelines.shot_detect import black_frames
from pipelines.stages.quality_scorer import QualityScorer
from pipelines.tasks import ClipTask

W, H, FRAMES = 320, 180, 50
MANDEL = f"mandelbrot=s={W}x{H}:r=25"
HELD = "mandelbrot=s=640x360:r=25,trim=end_frame=1,loop=loop=-1:size=1"  # one frame, held
VIDEOS = {
    "sharp": (MANDEL,),
    "blurred": (f"{MANDEL},gblur=sigma=6",),
    "dark": (f"{MANDEL},lutyuv=y=val*0.2",),
    "letterbox": (f"{MANDEL},scale={W}:136,pad={W}:{H}:0:22",),  # 22 px bars top and bottom
    "pillarbox": (f"{MANDEL},scale=240:{H},pad={W}:{H}:40:0",),  # 40 px bars left and right
    "fade_out": (f"{MANDEL},scale={W}:136,pad={W}:{H}:0:22,fade=out:st=0.8:d=0.2",),  # black from frame 25
    "frozen": (HELD, "-crf", "18"),  # x264 keeps refining the held frame: not bit-identical
    "grain": (f"{HELD},noise=alls=3:allf=t", "-crf", "18"),  # faint grain that survives the encode
}


def texture(h: int = 144, w: int = 256, seed: int = 0) -> np.ndarray:
    """uint8 RGB [h, w, 3]: smooth random blobs, a stand-in for a sharp picture."""
    rng = np.random.default_rng(seed)
    gray = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 1.5)
    gray = (gray - gray.mean()) / gray.std() * 40 + 128
    return np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def letterboxed(frame: np.ndarray, top: int, bottom: int, left: int = 0, right: int = 0) -> np.ndarray:
    out = frame.copy()
    h, w = out.shape[:2]
    out[:top], out[h - bottom :], out[:, :left], out[:, w - right :] = 0, 0, 0, 0
    return out


def test_bar_box_finds_bars_in_most_frames_and_scales_to_source() -> None:
    frames = np.stack([letterboxed(texture(seed=i), 18, 18, 10, 12) for i in range(6)])
    frames[5] = texture(seed=9)  # one frame without bars (a flash, a title) does not break the vote
    lumas = luma(frames)
    box = bar_box(lumas, np.zeros(6, bool))
    assert box == Box(10, 18, 256 - 22, 144 - 36)
    # 1920x1080 source (x7.5): edges at 75, 135, 1830, 945 px, moved inward to even coordinates
    assert source_box(box, (256, 144), (1920, 1080)) == Box(76, 136, 1830 - 76, 944 - 136)


def test_black_frames_and_dark_content_make_no_bars() -> None:
    black = np.zeros((4, 144, 256, 3), np.uint8)
    assert bar_box(luma(black), black_frames(black)[0]) == Box(0, 0, 256, 144)
    # a letterboxed clip that fades to black: the black frames do not vote, the bars stay
    frames = np.concatenate([np.stack([letterboxed(texture(seed=i), 20, 20) for i in range(3)]), black])
    assert bar_box(luma(frames), black_frames(frames)[0]) == Box(0, 20, 256, 104)
    # a still, dark picture (mean luma ~22) whose sides fall gradually to black is not pillarboxed:
    # its outer 21 columns are as dark as bars, but no step ends them
    ramp = np.minimum(np.arange(256), np.arange(256)[::-1]).astype(np.float32) * 0.3
    vignette = np.broadcast_to(ramp, (144, 256))[None].repeat(3, axis=0) + luma(texture())[None] * 0.02
    assert bar_box(vignette, np.zeros(3, bool), bar_step=0) == Box(21, 0, 214, 144)
    assert bar_box(vignette, np.zeros(3, bool)) == Box(0, 0, 256, 144)


def test_blur_clipped_and_frozen_on_synthetic_frames() -> None:
    sharp = luma(np.stack([texture(seed=i) for i in range(3)]))
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in sharp])
    full = Box(0, 0, 256, 144)
    assert blur_score(sharp, full) > 20 * blur_score(blurred, full)
    assert clipped_fraction(np.array([[0.0, 3.9, 128.0, 252.0]])) == 0.75

    rng = np.random.default_rng(1)
    still = np.repeat(texture(27, 48)[None], 10, axis=0).astype(np.int16)
    still[1::2, 5, 5] += 3  # encoder noise: one value off by a little
    assert frozen_fraction(still.astype(np.uint8)) == 1.0
    grain = np.clip(still + rng.integers(-1, 2, still.shape), 0, 255).astype(np.uint8)  # every pixel +-1
    assert frozen_fraction(grain) == 0.0
    moving = np.stack([texture(27, 48, seed=i) for i in range(10)])
    assert frozen_fraction(moving) == 0.0
    assert frozen_fraction(moving[:1]) == 0.0
    on_twos = np.repeat(moving, 2, axis=0)  # animation on twos, 30 fps stored at 60: every other pair repeats
    assert frozen_fraction(on_twos) == pytest.approx(10 / 19)
    assert frozen_fraction(on_twos, min_run=6) == 0.0  # no run lasts 0.25 s at 25 fps
    held = np.concatenate([moving[:4], still.astype(np.uint8), moving[4:]])  # 10 held frames mid-clip
    assert frozen_fraction(held, min_run=6) == pytest.approx(9 / 19)


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClipScores]:
    """Each VIDEOS entry encoded with x264, decoded once, scored by the QualityScorer stage."""
    d = tmp_path_factory.mktemp("quality")
    stage = QualityScorer()
    stage.setup()
    out = {}
    for name, (graph, *enc) in VIDEOS.items():
        path = d / f"{name}.mp4"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", graph, "-frames:v", str(FRAMES),
             "-c:v", "libx264", "-preset", "veryfast", *enc, "-pix_fmt", "yuv420p", str(path)],
            check=True, capture_output=True,
        )
        frames = decode_video(str(path), str(d / f"{name}.frames")).frames
        w, h = (640, 360) if graph.startswith(HELD) else (W, H)
        clip = Clip(name, "v", 0, 0, FRAMES, 0.0, FRAMES / 25, w, h, 25.0)
        clip.status, clip.reject_reason = "rejected", "x"  # rejected clips are scored too
        task = stage.process(ClipTask(clip, str(path), frames_dir=frames.dir))
        assert task.error is None and (clip.status, clip.reject_reason) == ("rejected", "x")  # scores only
        out[name] = clip.scores
    return out


def test_encoded_blur_and_darkness_separate_from_clean(scored: dict[str, ClipScores]) -> None:
    sharp, blurred, dark = scored["sharp"], scored["blurred"], scored["dark"]
    assert sharp.blur is not None and blurred.blur is not None and dark.luma is not None
    assert sharp.blur > 100 and blurred.blur < 10
    assert sharp.luma is not None and sharp.luma > 100 and dark.luma < 40
    assert dark.black_frac == 0.0  # dark but visible is not black
    assert sharp.clipped == 0.0


@pytest.mark.parametrize(
    ("name", "crop"),
    [("sharp", (0, 0, W, H)), ("letterbox", (0, 22, W, 136)), ("pillarbox", (40, 0, 240, H))],
)
def test_encoded_bars_give_the_source_crop(
    scored: dict[str, ClipScores], name: str, crop: tuple[int, int, int, int]
) -> None:
    s = scored[name]
    assert s.crop_x is not None and s.crop_y is not None and s.crop_w is not None and s.crop_h is not None
    assert np.abs(np.subtract((s.crop_x, s.crop_y, s.crop_w, s.crop_h), crop)).max() <= 2
    assert s.black_border == pytest.approx(1 - crop[2] * crop[3] / (W * H), abs=0.02)
    assert s.clipped is not None and s.clipped < 0.01  # measured inside the bars
    assert s.blur is not None and s.blur > 100  # the bar edges are not counted either


def test_encoded_fade_counts_black_frames_and_keeps_the_bars(scored: dict[str, ClipScores]) -> None:
    s = scored["fade_out"]
    assert s.black_frac == 0.5  # sparse frames 0, 13 | 25, 38
    assert (s.crop_y, s.crop_h) == (22, 136)


def test_encoded_held_frame_is_frozen_but_grain_is_not(scored: dict[str, ClipScores]) -> None:
    frozen, grain, sharp = scored["frozen"].frozen, scored["grain"].frozen, scored["sharp"].frozen
    assert frozen is not None and grain is not None and sharp is not None
    assert frozen > 0.9 and grain < 0.3 and sharp < 0.05


def test_errored_task_is_returned_untouched(tmp_path: Path) -> None:
    clip = Clip("c", "v", 0, 0, 10, 0.0, 0.4, W, H, 25.0)
    task = ClipTask(clip, "missing.mp4", frames_dir=str(tmp_path / "none"), error="decode: boom")
    assert QualityScorer().process(task) is task and clip.scores == ClipScores()
