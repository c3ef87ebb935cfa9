"""Inputs that ingest must survive (docs/architecture.md "Every input gets a row"): the run goes on, every
file gets exactly one row with a status, bad ones a readable error, odd-but-valid ones clips."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from curation.db import Catalog
from pipelines.config import load_config
from pipelines.curate import run_curate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# file -> what its error must mention (case-insensitive regex)
BAD = {
    "empty.mp4": r"empty",
    "audio_only.mp4": r"no video stream",
    "png_image.mp4": r"still image",
    "corrupt_bytes.mp4": r"cannot open|invalid data",
    "absurd_2x2.mp4": r"2x2|too small",
    "absurd_10h_gap.mp4": r"duration",
}
# Unusual but valid: each must be 'ok' and give kept clips that reach the shards.
GOOD = (
    "rotated_90.mp4",
    "odd_97x55_yuv444.mp4",
    "vfr.mp4",
    "vidéo 测试 file.mp4",
    "nested/deeper/nested_clip.mp4",
)
# 97x55 is below the default 64-px minimum; lower it so the odd size must make it to the shards.
# These files test formats, not content: they are static test patterns (bars, testsrc2 with its
# burned-in clock), so the content filters are opened up for them (testsrc2's pixel-sharp
# pattern at 160x90 also reads as blocking on the codec grid: artifacts 0.20).
OVERRIDES = {"filters": {"min_width": 32, "min_height": 32, "max_frozen": 1.0, "min_motion": 0.0,
                         "max_text_area": 1.0, "min_blur": 0.0, "max_black_border": 1.0,
                         "max_artifacts": 1.0}}


def read_catalog(out: Path) -> dict[str, Any]:
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        return {
            "files": cat.dicts("SELECT * FROM files ORDER BY path"),
            "videos": {v.video_id: v for v in cat.videos()},
            "clips": cat.clips(),
            "n_files": cat.query("SELECT count(*) FROM files")[1][0][0],
            "shard_samples": cat.counts()["shard_samples"],
        }


@pytest.fixture(scope="module")
def curated(
    bad_inputs: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    src, _ = bad_inputs
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    for key, value in OVERRIDES["filters"].items():
        setattr(cfg.filters, key, value)
    out = tmp_path_factory.mktemp("bad_out") / "out"
    counts = run_curate([str(src)], out, cfg)  # must not raise
    return {"src": src, "out": out, "counts": counts, **read_catalog(out)}


def by_name(curated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {Path(r["path"]).relative_to(curated["src"]).as_posix(): r for r in curated["files"]}


def test_every_file_gets_exactly_one_row(
    curated: dict[str, Any], bad_inputs: tuple[Path, dict[str, str]]
) -> None:
    src, listed = bad_inputs
    on_disk = {p.relative_to(src).as_posix() for p in src.rglob("*.mp4") if p.is_file()}
    assert on_disk == set(listed)
    files = by_name(curated)
    assert set(files) == on_disk and curated["n_files"] == len(on_disk)
    for name, row in files.items():
        assert row["status"] in ("ok", "error", "duplicate"), name
        assert row["video_id"] in curated["videos"], name  # and a videos row behind it


def test_bad_files_have_readable_errors(curated: dict[str, Any]) -> None:
    files = by_name(curated)
    for name, pattern in BAD.items():
        row = files[name]
        video = curated["videos"][row["video_id"]]
        assert row["status"] == video.status == "error", (name, row)
        assert row["error"] and re.search(pattern, row["error"], re.IGNORECASE), (name, row["error"])
        assert "\n" not in row["error"] and len(row["error"]) < 500, name
        assert not [c for c in curated["clips"] if c.video_id == row["video_id"]], name


def test_truncated_file_is_not_silent(curated: dict[str, Any]) -> None:
    """Half an mp4: either an error, or its decodable frames with a recorded warning."""
    row = by_name(curated)["truncated_half.mp4"]
    video = curated["videos"][row["video_id"]]
    assert video.error and re.search(r"truncat|cannot|invalid", video.error, re.IGNORECASE), video
    assert row["error"] == video.error  # the file's own row says so too


def test_unusual_valid_files_give_clips(curated: dict[str, Any]) -> None:
    files = by_name(curated)
    for name in GOOD:
        row = files[name]
        assert row["status"] == "ok" and not row["error"], (name, row)
        kept = [c for c in curated["clips"] if c.video_id == row["video_id"] and c.status == "kept"]
        assert kept, (
            name,
            [(c.status, c.reject_reason) for c in curated["clips"] if c.video_id == row["video_id"]],
        )
        for c in kept:
            assert c.path and (curated["out"] / c.path).stat().st_size > 0, name
    assert curated["shard_samples"] == len([c for c in curated["clips"] if c.status == "kept"])


def test_rotated_clip_is_upright(curated: dict[str, Any]) -> None:
    import av

    video_id = by_name(curated)["rotated_90.mp4"]["video_id"]
    video = curated["videos"][video_id]
    assert (video.rotation, video.width, video.height) == (90, 180, 320)  # displayed size
    for clip in (c for c in curated["clips"] if c.video_id == video_id):
        with av.open(str(curated["out"] / clip.path)) as container:
            ctx = container.streams.video[0].codec_context
            assert (ctx.width, ctx.height) == (clip.width, clip.height) == (180, 320)


def test_single_frame_video_is_kept_out_with_a_reason(curated: dict[str, Any]) -> None:
    video_id = by_name(curated)["single_frame.mp4"]["video_id"]
    clips = [c for c in curated["clips"] if c.video_id == video_id]
    assert all(c.status == "rejected" and c.reject_reason for c in clips)
    assert all(c.reject_reason for c in curated["clips"] if c.status == "rejected")


def test_cli_over_bad_inputs(curated: dict[str, Any], tmp_path: Path) -> None:
    """The default CLI path (a Prefect flow over a local Ray) exits 0 and records the same rows."""
    out = tmp_path / "cli_out"
    sets = [f"--set=filters.{k}={v}" for k, v in OVERRIDES["filters"].items()]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}  # its own ephemeral server
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidloom.cli",
            "curate",
            str(curated["src"]),
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--runner",
            "ray",
            "--quiet",
            *sets,
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "vidloom curate: done" in proc.stdout
    cli = read_catalog(out)
    assert cli["files"] == curated["files"]  # Ray + Prefect == sequential, row for row
    assert {c.clip_id: c.status for c in cli["clips"]} == {c.clip_id: c.status for c in curated["clips"]}
    assert cli["shard_samples"] == curated["shard_samples"]
