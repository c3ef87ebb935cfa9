"""Ingest: every input gets a Video row with an exact probe or a readable error, never an exception."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from curation.schema import ID_LEN
from pipelines.stages.ingest import Probe, discover_inputs, is_vfr, probe_video
from pipelines.tasks import VideoTask


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True)


def make_video(path: Path, *, size: str = "320x240", rate: str = "25", seconds: float = 2.0,
               vf: str = "", extra: tuple[str, ...] = (), audio: bool = False, gop: int = 10) -> Path:
    """testsrc2 h264 (optionally with a sine audio track)."""
    src = f"testsrc2=size={size}:rate={rate}:duration={seconds}" + (f",{vf}" if vf else "")
    inputs = ["-f", "lavfi", "-i", src] + (["-f", "lavfi", "-i", f"sine=duration={seconds}"] if audio else [])
    ffmpeg(*inputs, "-c:v", "libx264", "-g", str(gop), "-pix_fmt", "yuv420p", *extra, str(path))
    return path


def rotate(src: Path, dst: Path, degrees: int) -> Path:
    """Stream-copy ``src`` with a display matrix rotating it ``degrees`` counter-clockwise."""
    try:  # FFmpeg >= 6
        ffmpeg("-display_rotation", str(degrees), "-i", str(src), "-c", "copy", str(dst))
    except subprocess.CalledProcessError:  # FFmpeg 5.x: the legacy tag, read back as a CCW display matrix
        ffmpeg("-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(dst))
    return dst


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ingest")
    normal = make_video(d / "normal.mp4", audio=True)
    files = {
        "normal": normal,
        "rotated": rotate(normal, d / "rotated.mp4", 90),
        "mkv": make_video(d / "clip.mkv"),
        # More packets than the VFR check reads, B-frames reordered across its cut.
        "long": make_video(d / "long.mp4", rate="30", seconds=8, size="64x48", gop=250),
        "vfr": make_video(d / "vfr.mp4", rate="30", seconds=3, vf="select='lt(mod(n\\,10)\\,5)'",
                          extra=("-fps_mode", "vfr")),
        "tiny": make_video(d / "tiny.mp4", size="8x8"),
        "slow": make_video(d / "slow.mp4", rate="1/2", seconds=6),
        "empty": d / "empty.mp4",
        "text": d / "notes.mp4",
        "png": d / "picture.mp4",
        "jpg": d / "photo.mp4",
        "audio": d / "song.mp4",
        "no_moov": d / "no_moov.mp4",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a video\n")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", "-f", "image2", "-c:v", "png",
           str(files["png"]))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", "-f", "image2", "-c:v", "mjpeg",
           str(files["jpg"]))
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(files["audio"]))
    data = normal.read_bytes()  # moov at the end: cutting it off makes the file unopenable
    files["no_moov"].write_bytes(data[: len(data) // 2])
    return files


def test_probe_normal_file_is_exact(media: dict[str, Path]) -> None:
    path = media["normal"]
    v = probe_video(str(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (v.status, v.error) == ("ok", None)
    assert v.sha256 == sha and v.video_id == sha[:ID_LEN]
    assert (v.fps, v.n_frames, v.width, v.height, v.codec) == (25.0, 50, 320, 240, "h264")
    assert v.duration_s == pytest.approx(2.0, abs=0.05)
    assert (v.rotation, v.has_audio, v.vfr, v.size_bytes) == (0, True, False, path.stat().st_size)


def test_probe_rotated_reports_rotation_and_displayed_size(media: dict[str, Path]) -> None:
    v = probe_video(str(media["rotated"]))
    assert (v.status, v.rotation, v.width, v.height) == ("ok", 90, 240, 320)


def test_probe_mkv_estimates_frame_count(media: dict[str, Path]) -> None:
    v = probe_video(str(media["mkv"]))  # matroska stores no frame count: duration * fps
    assert (v.status, v.n_frames, v.fps) == ("ok", 50, 25.0)


def test_probe_detects_variable_frame_rate(media: dict[str, Path]) -> None:
    assert probe_video(str(media["vfr"])).vfr is True
    assert probe_video(str(media["mkv"])).vfr is False  # 1 ms time base: 40 ms steps, still constant
    assert probe_video(str(media["long"])).vfr is False  # B-frames reordered across the 200-packet cut


def test_is_vfr_tolerates_time_base_rounding() -> None:
    assert not is_vfr([0, 33, 67, 100, 133, 167, 200])  # 29.97 fps in a 1 ms time base
    assert is_vfr([0, 33, 67, 200, 233])
    assert not is_vfr([0]) and not is_vfr([])


@pytest.mark.parametrize(("kind", "message"), [
    ("empty", "empty file"),
    ("text", "cannot open: Invalid data found when processing input"),
    ("no_moov", "cannot open: Invalid data found when processing input"),
    ("audio", "no video stream (audio-only)"),
    ("png", "still image, not a video"),
    ("jpg", "still image, not a video"),
    ("tiny", "frame size 8x8 is too small (under 16 px)"),
    ("slow", "frame rate 0.5 is outside [1, 480] fps"),
])
def test_bad_inputs_become_error_rows(media: dict[str, Path], kind: str, message: str) -> None:
    path = media[kind]
    v = probe_video(str(path))
    assert (v.status, v.error) == ("error", message)
    # The file is readable, so identity still comes from its bytes.
    assert v.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_limits_from_config(media: dict[str, Path]) -> None:
    path = str(media["normal"])
    assert probe_video(path, max_duration_s=1.0).error == "duration 2 s exceeds max_duration_s=1"
    assert probe_video(path, max_pixels=320 * 239).error == "frame size 320x240 exceeds max_pixels=76480"


def test_missing_file_gets_a_path_identity(tmp_path: Path) -> None:
    path = str(tmp_path / "gone.mp4")
    v = probe_video(path)
    sha = hashlib.sha256(f"path:{path}".encode()).hexdigest()
    assert (v.status, v.error, v.sha256, v.video_id) == ("error", "file not found", sha, sha[:ID_LEN])


def test_unicode_path_with_spaces(media: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "vidéo 测试 clip (1).mp4"
    shutil.copy(media["normal"], path)
    v = probe_video(str(path))
    assert (v.status, v.n_frames, v.path) == ("ok", 50, str(path))
    assert v.video_id == probe_video(str(media["normal"])).video_id  # identity is the bytes, not the path


def test_probe_stage_never_raises(media: dict[str, Path]) -> None:
    stage = Probe(max_duration_s=3600.0)
    tasks = [stage.process(VideoTask(path=str(p))) for p in media.values()]
    assert all(t.video is not None for t in tasks)
    assert sorted(t.video.status for t in tasks if t.video) == ["error"] * 8 + ["ok"] * 5


def test_discover_inputs(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for name in ["a.mp4", "B.MOV", "notes.txt", "sub/c.mkv", "sub/deeper/d.webm", "sub/e.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")  # a loop must not recurse forever
    other = tmp_path.parent / f"{tmp_path.name}-other"
    other.mkdir()
    (other / "f.mp4").write_bytes(b"x")
    (other / "g.avi").write_bytes(b"x")

    found = discover_inputs([str(tmp_path), str(tmp_path / "notes.txt"), str(tmp_path / "a.mp4"),
                             str(other / "*.mp4"), str(tmp_path / "missing.mp4")])
    expected = [tmp_path / "B.MOV", tmp_path / "a.mp4", tmp_path / "notes.txt", tmp_path / "sub" / "c.mkv",
                tmp_path / "sub" / "deeper" / "d.webm", other / "f.mp4"]
    assert found == sorted(str(p) for p in expected)
    assert discover_inputs([str(tmp_path)], extensions=("MKV",)) == [str(tmp_path / "sub" / "c.mkv")]
