"""Motion scores: speed in frame widths per second and the camera label, on synthetic and encoded frames."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from curation.schema import Clip, ClipScores
from pipelines.decode import decode_video
from pipelines.motion import camera_label, clip_pairs, tiny_samples
from pipelines.stages.motion_scorer import MotionScorer
from pipelines.tasks import ClipTask

FPS, STEP = 24.0, 12  # synthetic sparse frames 0.5 s apart
SW, SH = 256, 144  # the sparse frame size


def pink_texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB [h, w, 3] 1/f noise: detail at every scale, like a natural picture."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    f[0, 0] = 1.0
    spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f
    spec[0, 0] = 0
    gray = np.fft.irfft2(spec, s=(h, w))
    gray = 128 + 50 * gray / gray.std()
    return np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return pink_texture(360, 640)


def windows(scene: np.ndarray, offsets: list[tuple[int, int]]) -> np.ndarray:
    """Sparse-sized views of ``scene`` at top-left ``offsets`` (x, y): a camera moving over it."""
    return np.stack([scene[y : y + SH, x : x + SW] for x, y in offsets])


def zoomed(scene: np.ndarray, scales: list[float]) -> np.ndarray:
    """Centre crops of ``scene`` magnified by ``scales``, resized to the sparse size."""
    h, w = scene.shape[:2]
    out = []
    for z in scales:
        cw, ch = round(SW / z), round(SH / z)
        x, y = (w - cw) // 2, (h - ch) // 2
        out.append(cv2.resize(scene[y : y + ch, x : x + cw], (SW, SH), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def measure(frames: np.ndarray) -> tuple[float, str]:
    pairs = clip_pairs(frames, np.arange(len(frames)) * STEP, FPS)
    return float(np.median([p.speed for p in pairs])), camera_label(pairs)


@pytest.mark.parametrize(
    ("offsets", "label"),
    [
        ([(100 + 32 * i, 100) for i in range(5)], "pan_right"),  # content moves left
        ([(300 - 32 * i, 100) for i in range(5)], "pan_left"),
        ([(200, 150 - 32 * i) for i in range(5)], "tilt_up"),  # content moves down
        ([(200, 20 + 32 * i) for i in range(5)], "tilt_down"),
    ],
)
def test_synthetic_pans_and_tilts(scene: np.ndarray, offsets: list[tuple[int, int]], label: str) -> None:
    speed, got = measure(windows(scene, offsets))
    assert got == label
    assert speed == pytest.approx(32 / SW * FPS / STEP, rel=0.05)  # 32 px per 0.5 s = 0.25 widths/s


def test_synthetic_zoom_still_and_mixed(scene: np.ndarray) -> None:
    assert measure(zoomed(scene, [1.1**i for i in range(5)]))[1] == "zoom_in"
    assert measure(zoomed(scene, [1.1**-i for i in range(5)]))[1] == "zoom_out"
    speed, label = measure(windows(scene, [(100, 100)] * 5))
    assert label == "static" and speed < 1e-3
    # the left half rises, the right half sinks (0.0625 widths/s): no camera move explains it
    up = windows(scene, [(100, 150 - 8 * i) for i in range(5)])
    down = windows(scene, [(300, 50 + 8 * i) for i in range(5)])
    speed, label = measure(np.concatenate([up[:, :, : SW // 2], down[:, :, SW // 2 :]], axis=2))
    assert label == "mixed" and speed == pytest.approx(8 / SW * FPS / STEP, rel=0.1)
    # a new picture every frame (water, confetti): large motion, no model
    speed, label = measure(np.stack([pink_texture(SH, SW, seed=i) for i in range(5)]))
    assert label == "mixed" and speed > 0.02


def test_tiny_samples_are_about_half_a_second_apart() -> None:
    tiny = np.zeros((30, 27, 48, 3), np.uint8)
    frames, idx = tiny_samples(tiny, 100, 25.0)
    assert idx.tolist() == [100, 112, 124] and len(frames) == 3
    assert tiny_samples(tiny[:5], 100, 25.0)[1].tolist() == [100, 104]  # shorter than the step
    assert len(tiny_samples(tiny[:1], 100, 25.0)[0]) == 1


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Camera moves over a still picture, x264-encoded (320x180, 25 fps, 3 s) and decoded once:
    name -> FrameSet dir."""
    d = tmp_path_factory.mktemp("motion")
    picture = d / "scene.png"
    cv2.imwrite(str(picture), pink_texture(720, 1600, seed=1))
    zoom = "zoompan=z='{}':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=1:s=320x180:fps=25"
    filters = {
        "still": "crop=320:180:300:100",
        "pan_right": "crop=320:180:'40+t*80':100",  # the window moves right: 80 px/s = 0.25 widths/s
        "pan_left": "crop=320:180:'600-t*80':100",
        "whip_pan": "crop=320:180:'10+t*400':100",  # 1.25 widths/s: sparse frames 0.5 s apart barely overlap
        "tilt_up": "crop=320:180:300:'340-t*60'",
        "tilt_down": "crop=320:180:300:'20+t*60'",
        "zoom_in": zoom.format("1+0.01*on"),
        "zoom_out": zoom.format("1.8-0.01*on"),
    }
    out = {}
    for name, vf in filters.items():
        path = d / f"{name}.mp4"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(picture), "-vf", f"loop=-1:1,setpts=N/25/TB,{vf}",
             "-r", "25", "-frames:v", "75", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
             str(path)],
            check=True, capture_output=True,
        )
        out[name] = decode_video(str(path), str(d / f"{name}.frames")).frames.dir
    return out


def score(frames_dir: str, start: int = 0, end: int = 75) -> ClipScores:
    clip = Clip("c", "v", 0, start, end, start / 25, end / 25, 320, 180, 25.0)
    task = ClipTask(clip, "unused.mp4", frames_dir=frames_dir)
    stage = MotionScorer()
    stage.setup()
    assert stage.process(task) is task and task.error is None
    return clip.scores


@pytest.mark.parametrize(
    ("name", "speed"),
    [("still", 0.0), ("pan_right", 0.25), ("pan_left", 0.25), ("whip_pan", 1.25), ("tilt_up", 0.1875),
     ("tilt_down", 0.1875), ("zoom_in", None), ("zoom_out", None)],
)
def test_encoded_camera_moves(encoded: dict[str, str], name: str, speed: float | None) -> None:
    s = score(encoded[name])
    assert s.camera_motion == {"still": "static", "whip_pan": "pan_right"}.get(name, name)
    assert s.motion is not None
    if speed is not None:
        assert s.motion == pytest.approx(speed, rel=0.05, abs=1e-3)
    else:
        assert 0.02 < s.motion < 0.2


def test_short_clip_falls_back_to_tiny_frames(encoded: dict[str, str]) -> None:
    s = score(encoded["pan_right"], 20, 30)  # 0.4 s: one sparse frame (25) in the span
    assert s.camera_motion == "pan_right"
    assert s.motion == pytest.approx(0.25, rel=0.25)  # 48x27 frames: coarser
    one = score(encoded["pan_right"], 20, 21)
    assert one.motion is None and one.camera_motion is None  # a single frame has no motion


def test_errored_task_is_returned_untouched(tmp_path: Path) -> None:
    clip = Clip("c", "v", 0, 0, 10, 0.0, 0.4, 320, 180, 25.0)
    task = ClipTask(clip, "missing.mp4", frames_dir=str(tmp_path / "none"), error="decode: boom")
    assert MotionScorer().process(task) is task and clip.scores == ClipScores()


REAL = Path(__file__).parent / "data" / "real"


def test_slow_real_pan_is_not_static(tmp_path: Path) -> None:
    """The Sintel trailer's slow pan over dunes (tests/data/real/sintel_title.mp4, frames 0-59,
    CC-BY) is calm footage, not a still: it clears ``min_motion`` with room to spare."""
    from pipelines.config import FilterConfig

    frames = decode_video(str(REAL / "sintel_title.mp4"), str(tmp_path / "f")).frames.dir
    clip = Clip("c", "v", 0, 0, 60, 0.0, 2.5, 640, 360, 24.0)
    stage = MotionScorer()
    stage.setup()
    stage.process(ClipTask(clip, "unused.mp4", frames_dir=frames))
    assert clip.scores.motion is not None and clip.scores.motion > 5 * FilterConfig().min_motion
