"""Compression damage (pipelines/artifacts.py) on a real clip and its x264 re-encodes.

The clip is the desert pan of the Sintel trailer title shot (tests/data/real/sintel_title.mp4,
CC-BY, 640x360 24 fps; its first 3 s hold one shot), cropped to the picture inside the
letterbox bars and re-encoded here at crf 20, 35 and 50. Each copy goes through the decode
pass, the scorers and the keep/reject rules the curate pipeline runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curation.schema import Clip, clip_row
from pipelines import artifacts
from pipelines.config import FilterConfig
from pipelines.decide import reject_reason
from pipelines.decode import decode_video
from pipelines.tasks import ClipTask

TITLE = Path(__file__).parent / "data" / "real" / "sintel_title.mp4"
X264 = ["-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-threads", "1"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def desert(out: Path, crf: int) -> Path:
    """The first 3 s of the title shot, inside its bars (640x272 at y=44), at ``crf``."""
    ffmpeg("-t", "3", "-i", str(TITLE), "-vf", "crop=640:272:0:44", *X264, "-crf", str(crf), str(out))
    return out


def scored(path: Path, work: Path) -> dict[str, Any]:
    """The clip row of the whole file after the decode pass and the frame scorers."""
    import av

    from pipelines.stages.artifact_scorer import ArtifactScorer
    from pipelines.stages.motion_scorer import MotionScorer
    from pipelines.stages.quality_scorer import QualityScorer

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        width, height, fps = s.width, s.height, float(s.average_rate)
    frames = decode_video(str(path), str(work / path.stem)).frames
    n = frames.n_frames
    task = ClipTask(Clip(path.stem, "v", 0, 0, n, 0.0, n / fps, width, height, fps), str(path), frames.dir)
    for stage in (QualityScorer(), ArtifactScorer(), MotionScorer()):
        task = stage.process(task)
    return clip_row(task.clip)


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    d = tmp_path_factory.mktemp("artifacts")
    return {crf: scored(desert(d / f"crf{crf}.mp4", crf), d / "frames") for crf in (20, 35, 50)}


def test_damage_rises_with_crf(copies: dict[int, dict[str, Any]]) -> None:
    """Measured: crf 20 / 35 / 50 read artifacts 0.00 / 0.09 / 0.96 (blockiness 0.07 / 0.13 /
    0.46, bits per pixel 0.059 / 0.010 / 0.003)."""
    rows = [copies[crf] for crf in (20, 35, 50)]
    art, block, bpp = ([r[k] for r in rows] for k in ("artifacts", "blockiness", "bits_per_pixel"))
    assert art[0] < art[1] < art[2], art
    assert block[0] < block[1] < block[2], block
    assert bpp[0] > bpp[1] > bpp[2], bpp
    assert art[0] < 0.05 and art[2] > 0.5, art


def test_only_the_crushed_copy_is_rejected_as_compressed(copies: dict[int, dict[str, Any]]) -> None:
    """crf 20 is kept; crf 35 has lost the sand's detail and is 'blurry' (blur 25 at 256x144,
    below 40), not 'compressed'; crf 50 is 'compressed', which comes before 'blurry'."""
    f = FilterConfig()
    reasons = {crf: reject_reason(row, f) for crf, row in copies.items()}
    assert reasons[20] is None and reasons[50] == "compressed", reasons
    assert reasons[35] != "compressed", reasons
    assert [reject_reason({**row, "blur": None}, f) for row in copies.values()] == [None, None, "compressed"]


def test_decode_pass_keeps_every_packet(tmp_path: Path) -> None:
    """The bytes per frame are the stream's packets, all of them, one per frame."""
    frames = decode_video(str(TITLE), str(tmp_path / "fs")).frames
    packet_bytes = np.load(Path(frames.dir) / "packet_bytes.npy")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size", "-of", "csv=p=0",
         str(TITLE)], capture_output=True, text=True, check=True,
    ).stdout.split()
    assert len(packet_bytes) == frames.n_frames == len(probe)
    assert packet_bytes.sum() == sum(map(int, probe)) and packet_bytes.min() > 0
    cols = np.load(Path(frames.dir) / "edge_cols.npy")
    rows = np.load(Path(frames.dir) / "edge_rows.npy")
    n_sparse = len(np.load(Path(frames.dir) / "sparse_idx.npy"))
    assert cols.shape == (n_sparse, 639) and rows.shape == (n_sparse, 359)  # full resolution


def test_a_held_frame_with_almost_no_bits_is_not_starved(tmp_path: Path) -> None:
    """Few bits alone are no damage: one desert frame held for 3 s at crf 23 costs 0.006 bits per
    pixel over all frames (starved), but the held copies rightly cost nothing: the bits of the
    changing (first) frame decide, and the mild gradient blocking it inherits from the source
    (blockiness 0.11) is not amplified (artifacts 0.04, 0.07 if it were)."""
    still = tmp_path / "still.png"
    ffmpeg("-ss", "1", "-i", str(TITLE), "-frames:v", "1", "-vf", "crop=640:272:0:44", str(still))
    held = tmp_path / "held.mp4"
    ffmpeg("-loop", "1", "-framerate", "24", "-t", "3", "-i", str(still), *X264, "-crf", "23", str(held))
    row = scored(held, tmp_path / "frames")
    assert row["frozen"] > 0.95 and row["bits_per_pixel"] < artifacts.CLEAN_BPP / 2
    assert row["artifacts"] == pytest.approx(artifacts.artifact_score(row["blockiness"], None))
    assert artifacts.artifact_score(row["blockiness"], row["bits_per_pixel"]) > row["artifacts"]
    assert reject_reason(row, FilterConfig()) == "frozen"  # a held frame, not a compressed one


def test_blocks_read_on_their_grid_and_bars_do_not() -> None:
    """A picture of flat 8x8 blocks reads far above a smooth one; a hard edge on the grid (a
    letterbox bar) in a smooth picture is one block of many and reads nothing."""
    rng = np.random.default_rng(0)
    smooth = np.tile(np.linspace(40, 200, 256), (144, 1))
    smooth = np.clip(smooth + rng.normal(0, 2, smooth.shape), 0, 255).astype(np.uint8)
    blocks = np.kron(rng.integers(90, 110, (18, 32)), np.ones((8, 8))).astype(np.uint8)
    barred = smooth.copy()
    barred[:16] = 0

    def score(y: np.ndarray) -> float:
        cols, rows = artifacts.edge_profiles(y)
        value = artifacts.blockiness(cols[None], rows[None])
        assert value is not None
        return value

    assert score(blocks) > 1.0
    assert abs(score(smooth)) < 0.05 and abs(score(barred)) < 0.05
    assert artifacts.artifact_score(score(smooth), 0.0001) == 0.0  # no blocks: no damage, whatever the bits
    tiny_cols, tiny_rows = artifacts.edge_profiles(blocks[:12, :12])  # too few blocks for any grid
    assert artifacts.blockiness(tiny_cols[None], tiny_rows[None]) is None
