"""The single decode pass: exact frames, display orientation, sparse sampling, truncation, resume."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from curation.schema import Video
from pipelines.decode import (
    DecodeError,
    SparseClock,
    decode_only_fps,
    decode_video,
    load_sparse,
    load_timeline,
    load_tiny,
    sparse_dims,
)
from pipelines.stages.decode_stage import Decode
from pipelines.tasks import VideoTask

TESTSRC = "testsrc2=size=320x240:rate=25:duration=4"
FILES = ("tiny.npy", "pts.npy", "keyframe.npy", "sparse.npy", "sparse_idx.npy", "meta.json")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True)


def make_video(path: Path, src: str, *extra: str) -> Path:
    """h264 from a lavfi source, a keyframe exactly every 10 frames."""
    ffmpeg("-f", "lavfi", "-i", src, "-c:v", "libx264", "-g", "10", "-keyint_min", "10", "-sc_threshold", "0",
           "-pix_fmt", "yuv420p", *extra, str(path))
    return path


def digests(d: Path) -> dict[str, str]:
    return {name: hashlib.sha256((d / name).read_bytes()).hexdigest() for name in FILES}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("decode")
    files = {
        "normal": make_video(d / "normal.mp4", TESTSRC, "-movflags", "+faststart"),
        "mkv": make_video(d / "normal.mkv", TESTSRC),
        # A white box in the coded top-left corner: after a 90 degree CCW rotation it is bottom-left.
        "box": make_video(d / "box.mp4", "color=black:size=64x32:rate=10:duration=1,"
                          "drawbox=x=0:y=0:w=16:h=8:color=white:t=fill"),
        # 10 frames at the start of each second: 1/30 s steps with 2/3 s gaps.
        "vfr": make_video(d / "vfr.mp4", "testsrc2=size=160x120:rate=30:duration=3,"
                          "select='lt(mod(n\\,30)\\,10)'", "-fps_mode", "vfr"),
    }
    rotated = d / "box_rot90.mp4"
    try:  # FFmpeg >= 6
        ffmpeg("-display_rotation", "90", "-i", str(files["box"]), "-c", "copy", str(rotated))
    except subprocess.CalledProcessError:  # FFmpeg 5.x: the legacy tag, read back as a CCW display matrix
        ffmpeg("-i", str(files["box"]), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    files["rotated"] = rotated
    for kind in ("normal", "mkv"):  # cut in half: mp4 with its index up front, matroska
        data = files[kind].read_bytes()
        files[f"cut_{kind}"] = d / f"cut_{files[kind].name}"
        files[f"cut_{kind}"].write_bytes(data[: len(data) // 2])
    files["text"] = d / "text.mp4"
    files["text"].write_text("not a video")
    return files


def test_decode_exact_frames_timeline_and_keyframes(media: dict[str, Path], tmp_path: Path) -> None:
    result = decode_video(str(media["normal"]), str(tmp_path / "fs"))
    fs = result.frames
    assert (fs.n_frames, result.truncated, result.resumed, fs.sparse_size) == (100, False, False, (192, 144))
    tiny = load_tiny(fs)
    assert tiny.shape == (100, 27, 48, 3) and tiny.dtype == np.uint8
    pts, keyframe = load_timeline(fs)
    assert np.all(np.diff(pts) > 0)
    np.testing.assert_allclose(pts, np.arange(100) / 25, atol=1e-6)
    assert np.flatnonzero(keyframe).tolist() == list(range(0, 100, 10))
    sparse, idx = load_sparse(fs)
    assert sparse.shape == (8, 144, 192, 3)  # 4 s at 2 fps; 4:3 fitted in 256x144
    assert idx.tolist() == [0, 13, 25, 38, 50, 63, 75, 88]  # first frame at or after each 0.5 s step


def test_tiny_frames_match_ffmpeg_area_scale(media: dict[str, Path], tmp_path: Path) -> None:
    fs = decode_video(str(media["normal"]), str(tmp_path / "fs")).frames
    cmd = ["ffmpeg", "-v", "error", "-i", str(media["normal"]), "-vf", "scale=48:27:flags=area",
           "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(-1, 27, 48, 3)
    assert ref.shape[0] == fs.n_frames
    assert np.abs(load_tiny(fs).astype(np.int16) - ref).mean() < 2.0


def test_rotation_gives_display_orientation(media: dict[str, Path], tmp_path: Path) -> None:
    fs = decode_video(str(media["rotated"]), str(tmp_path / "fs")).frames
    white = load_tiny(fs)[0, :, :, 0] > 128
    assert white[-1, 0] and not white[0, 0] and not white[0, -1] and not white[-1, -1]
    sparse, _ = load_sparse(fs)
    assert fs.sparse_size == (72, 144) and sparse.shape[1:] == (144, 72, 3)  # portrait after rotation


def test_vfr_sparse_follows_timestamps(media: dict[str, Path], tmp_path: Path) -> None:
    result = decode_video(str(media["vfr"]), str(tmp_path / "fs"), sparse_fps=4.0)
    pts, _ = load_timeline(result.frames)
    _, idx = load_sparse(result.frames)
    assert result.frames.n_frames == 30  # 10 frames in the first third of each second
    assert pts[idx].round(3).tolist() == [0.0, 0.267, 1.0, 1.267, 2.0, 2.267]


def test_sparse_clock_and_dims() -> None:
    clock = SparseClock(2.0)
    times = [0.0, 0.1, 0.49, 0.5, 0.9, 2.2, 2.3, 2.5]
    assert [t for t in times if clock.take(t)] == [0.0, 0.5, 2.2, 2.5]
    assert sparse_dims(1280, 720, (256, 144)) == (256, 144)
    assert sparse_dims(720, 1280, (256, 144)) == (80, 144)
    assert sparse_dims(1920, 800, (256, 144)) == (256, 106)


@pytest.mark.parametrize("kind", ["cut_normal", "cut_mkv"])
def test_truncated_file_keeps_decoded_frames(media: dict[str, Path], tmp_path: Path, kind: str) -> None:
    result = decode_video(str(media[kind]), str(tmp_path / "fs"))
    assert result.truncated and result.warning
    assert 20 < result.frames.n_frames < 100
    assert load_tiny(result.frames).shape[0] == result.frames.n_frames


def test_unreadable_file_raises_decode_error(media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="cannot open"):
        decode_video(str(media["text"]), str(tmp_path / "fs"))
    assert not (tmp_path / "fs").exists() and list(tmp_path.iterdir()) == []  # no temp dir left behind


def test_rerun_is_a_noop_and_output_is_deterministic(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fs"
    first = decode_video(str(media["normal"]), str(out))
    before = digests(out)
    mtimes = {name: (out / name).stat().st_mtime_ns for name in FILES}
    again = decode_video(str(media["normal"]), str(out))
    assert again.resumed and again.frames == first.frames
    assert {name: (out / name).stat().st_mtime_ns for name in FILES} == mtimes
    decode_video(str(media["normal"]), str(tmp_path / "fresh"))
    assert digests(tmp_path / "fresh") == before


def test_incomplete_or_stale_dir_is_redone(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fs"
    out.mkdir()
    (out / "tiny.npy").write_bytes(b"partial")  # a killed run's leftovers (no meta.json)
    assert decode_video(str(media["normal"]), str(out)).frames.n_frames == 100
    other = decode_video(str(media["normal"]), str(out), sparse_fps=1.0)  # new parameters: redone
    assert not other.resumed and load_sparse(other.frames)[0].shape[0] == 4


def test_decode_stage(media: dict[str, Path], tmp_path: Path) -> None:
    stage = Decode(work_dir=str(tmp_path))

    def task(kind: str, n_frames: int | None = 1) -> VideoTask:
        video = Video(video_id=f"{kind:0<16}"[:16], path=str(media[kind]), sha256="", n_frames=n_frames)
        return VideoTask(path=str(media[kind]), video=video)

    ok = stage.process(task("mkv"))
    assert ok.video and ok.frames and ok.video.n_frames == 100 and ok.video.status == "ok"
    assert ok.frames.dir == str(tmp_path / "frames" / "mkv0000000000000")
    cut = stage.process(task("cut_normal"))
    assert cut.video and cut.video.status == "ok" and (cut.video.error or "").startswith("truncated: ")
    bad = stage.process(task("text"))
    assert bad.video and bad.frames is None and bad.video.status == "error"
    assert (bad.video.error or "").startswith("cannot open")
    skipped = task("normal")
    assert skipped.video
    skipped.video.status = "error"
    assert stage.process(skipped).frames is None


def test_speed_print(tmp_path: Path) -> None:
    """Not a timing assertion: prints decode_video against the decode-only limit (run with -s)."""
    path = make_video(tmp_path / "speed.mp4", "testsrc2=size=1280x720:rate=30:duration=3", "-preset", "fast")
    t0 = time.perf_counter()
    result = decode_video(str(path), str(tmp_path / "fs"))
    fps = result.frames.n_frames / (time.perf_counter() - t0)
    limit = decode_only_fps(str(path))
    print(f"\n720p decode_video: {fps:.0f} fps; decode + tiny scale only: {limit:.0f} fps")
    assert result.frames.n_frames == 90
